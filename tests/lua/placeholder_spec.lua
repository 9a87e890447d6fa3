describe("placeholder", function() it("runs", function() expect(1):to_equal(1) end) end)
