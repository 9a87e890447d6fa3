//! Every execution ends within its budget, whatever the script loops in:
//! finalizers, message handlers, patterns, C table functions.

use super::*;

#[test]
fn a_finalizer_cannot_run_a_loop_nothing_can_stop() {
    // Lua runs __gc with hooks off: a loop there would never end, so a
    // finalizer is refused when the metatable is set.
    fails_with(
        "setmetatable({}, { __gc = function() while true do end end }) collectgarbage() return 1",
        options(SMALL),
        "setmetatable: __gc finalizers are not available to skiff scripts",
    );
    fails_with(
        "setmetatable({}, { __gc = true })",
        options(SMALL),
        "setmetatable: __gc finalizers are not available to skiff scripts",
    );
    // Once set without __gc, adding it later marks nothing.
    assert_eq!(
        run_within(
            "local mt = {} local t = setmetatable({}, mt) mt.__gc = function() while true do end end t = nil collectgarbage() return 'ok'",
            options(SMALL),
            20
        ),
        Ok("ok".into())
    );
    // The file handles' metatable (whose __gc runs at every collection) is out of reach.
    fails_with(
        "getmetatable(io.stdout).__gc = function() while true do end end",
        options(SMALL),
        "attempt to index a boolean value",
    );
}

#[test]
fn an_xpcall_message_handler_stops_at_the_budget() {
    // The handler of an error raised by the budget hook runs with hooks off.
    fails_with(
        "xpcall(function() while true do end end, function(m) while true do end end)",
        options(SMALL),
        "instruction limit reached",
    );
    fails_with(
        "xpcall(function() error('x') end, function(m) while true do end end)",
        options(SMALL),
        "instruction limit reached",
    );
    // A handler still sees ordinary errors.
    assert_eq!(
        run_within(
            "return select(2, xpcall(function() error('boom', 0) end, function(m) return 'handled ' .. m end))",
            options(SMALL),
            20
        ),
        Ok("handled boom".into())
    );
}

#[test]
fn catastrophic_patterns_stop_at_the_budget() {
    for src in [
        "return string.find(string.rep('a', 30000), '.-.-.-.-.-.-b')",
        "return string.match(string.rep('a', 30000), '.-.-.-.-.-.-b')",
        "return string.gsub(string.rep('a', 30000), '.-.-.-.-.-.-b', 'x')",
        "return string.gsub(string.rep('a', 30000), '.-.-.-.-.-.-b', function() end)",
        "for m in string.gmatch(string.rep('a', 30000), '.-.-.-.-.-.-b') do end",
        "return ('a'):rep(30000):find('(.-)(.-)(.-)(.-)%1%2%3%4b')",
    ] {
        let started = Instant::now();
        fails_with(src, options(SMALL), "instruction limit reached");
        assert!(started.elapsed() < Duration::from_secs(10), "{src}");
    }
}

#[test]
fn a_substitution_cannot_grow_past_the_memory_limit() {
    // Built outside Lua's allocator, the result is held to the VM's memory limit.
    let opts = VmOptions {
        limits: LuaLimits {
            memory_limit: crate::config::ByteSize(16 << 20),
            instruction_limit: SMALL * 100,
            ..LuaLimits::default()
        },
        ..VmOptions::default()
    };
    assert_eq!(
        run_within(
            "local s = string.rep('a', 1e6) local ok, err = pcall(string.gsub, s, 'a', string.rep('b', 100)) return ok, err",
            opts,
            60
        ),
        Ok("false\tnot enough memory".into())
    );
}

#[test]
fn string_rep_of_nothing_returns_at_once() {
    assert_eq!(
        run_within(
            "return #string.rep('', math.maxinteger), #string.rep('', math.maxinteger, ''), string.rep('ab', 3, ',')",
            options(SMALL),
            20
        ),
        Ok("0\t0\tab,ab,ab".into())
    );
}

#[test]
fn table_functions_stop_at_the_budget() {
    for src in [
        // A length that lies makes insert and remove shift forever.
        "table.insert(setmetatable({}, { __len = function() return math.maxinteger - 1 end }), 1, 'x')",
        "table.remove(setmetatable({}, { __len = function() return math.maxinteger - 1 end }), 1)",
        // Moving nothing, almost 2^63 times.
        "table.move({}, 1, math.maxinteger - 1, 1)",
        "table.move({}, 2, math.maxinteger, 1, {})",
        // A C function as __index answers without running Lua.
        "table.concat(setmetatable({}, { __index = table.concat }), '', 1, math.maxinteger)",
        "table.sort(setmetatable({}, { __len = function() return 2^31 - 2 end, __index = rawlen, __newindex = rawequal }))",
    ] {
        fails_with(src, options(SMALL), "instruction limit reached");
    }
}
