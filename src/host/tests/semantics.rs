//! The counted replacements (patterns, table functions) keep stock Lua's
//! results and errors, case by case.

use super::*;

/// Runs every case (a Lua expression) in stock Lua and in a skiff VM, and
/// returns the cases whose results or errors differ. Both name their chunk
/// `t`, so messages compare with their `t:1:` prefix.
fn differences(cases: &[String]) -> Vec<String> {
    const HARNESS: &str = r#"
local cases = ...
local function ser(v, seen)
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t ~= "table" then return tostring(v) end
  if seen[v] then return "<cycle>" end
  seen[v] = true
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = ser(k, seen) .. "=" .. ser(v[k], seen) end
  return "{" .. table.concat(parts, ",") .. "}"
end
local out = {}
for i, c in ipairs(cases) do
  local f, err = load("return " .. c, "=t")
  if not f then f, err = load(c, "=t") end
  out[i] = f and ser(table.pack(pcall(f)), {}) or ("load: " .. err)
end
return out
"#;
    let bytes = |v: Vec<mlua::LuaString>| -> Vec<String> {
        v.iter()
            .map(|s| String::from_utf8_lossy(&s.as_bytes()).into_owned())
            .collect()
    };
    let reference = mlua::Lua::new();
    let expected = bytes(
        reference
            .load(HARNESS)
            .call(cases.to_vec())
            .expect("reference run"),
    );
    let vm = Vm::new(&options(1_000_000_000)).unwrap();
    let f = vm.load_source(HARNESS.as_bytes(), "=harness").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = rt.block_on(vm.call(f, cases.to_vec())).expect("skiff run");
    let got = match got.into_iter().next() {
        Some(Value::Table(t)) => bytes(t.sequence_values().map(|v| v.unwrap()).collect()),
        other => panic!("harness returned {other:?}"),
    };
    cases
        .iter()
        .zip(expected.iter().zip(got.iter()))
        .filter(|(_, (e, g))| e != g)
        .map(|(c, (e, g))| format!("{c}\n    lua:   {e}\n    skiff: {g}"))
        .collect()
}

#[track_caller]
fn same_as_lua(cases: Vec<String>) {
    let diffs = differences(&cases);
    assert!(
        diffs.is_empty(),
        "{} of {} cases differ from Lua 5.4:\n{}",
        diffs.len(),
        cases.len(),
        diffs
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

const SUBJECTS: &[&str] = &[
    r#""""#,
    r#""a""#,
    r#""aaa""#,
    r#""hello world""#,
    r#""  x = 10, y = 20  ""#,
    r#""(foo(bar))baz)""#,
    r#""THE (quick) fox""#,
    r#""a.b.c""#,
    r#""\0a\0b\0""#,
    r#""key=val; k2=v2;""#,
    r#""über ☃ 42""#,
    r#""line1\nline2\r\n\tend\v""#,
    "12345",
];

const PATTERNS: &[&str] = &[
    r#""""#,
    r#""a""#,
    r#""^a""#,
    r#""a$""#,
    r#""^$""#,
    r#"".""#,
    r#""%a+""#,
    r#""%d+""#,
    r#""(%w+)=(%w+)""#,
    r#""%s*(.-)%s*$""#,
    r#""()a()""#,
    r#""%bxy""#,
    r#""%b()""#,
    r#""%f[%w]%w+""#,
    r#""%f[%W]""#,
    r#""[^%s]+""#,
    r#""[a-c]+""#,
    r#""[%]]""#,
    r#""[]]""#,
    r#""[^]]+""#,
    r#""a-""#,
    r#""a*""#,
    r#""a?b""#,
    r#""(a)%1""#,
    r#""((a)(b))""#,
    r#""(""#,
    r#"")""#,
    r#""%""#,
    r#""[a""#,
    r#""%b""#,
    r#""%bx""#,
    r#""%f""#,
    r#""%fx""#,
    r#""(()""#,
    r#""%1""#,
    r#""(a%1)""#,
    r#""%g+""#,
    r#""[%a-z]+""#,
    r#""[a-]+""#,
    r#""[-a]+""#,
    r#"".-b""#,
    r#""x*""#,
    r#""%z""#,
    r#""%Z+""#,
    r#""\0""#,
    r#""[\0-\31]""#,
    r#""%x+""#,
    r#""%p""#,
    r#""%c+""#,
    r#""%u%l*""#,
    r#""^(%s*)""#,
    r#""(.)(.)(.)""#,
    r#""[%w_]+""#,
    r#""%.""#,
    r#""%%""#,
    r#""a+$""#,
    r#""$a""#,
    r#""^""#,
    r#""[^a-z%d]""#,
    r#""o""#,
    r#"".?.?$""#,
    r#""(h)(e)(l)(l)(o)""#,
    r#""%s+""#,
    r#""(=)()""#,
    r#""[%s%p]+""#,
    r#""\226\152\131""#,
    "3",
    r#""(a*(.)%w(%s*))""#,
];

#[test]
fn patterns_keep_lua_semantics() {
    let mut cases = Vec::new();
    for s in SUBJECTS {
        for p in PATTERNS {
            cases.push(format!("string.find({s}, {p})"));
            cases.push(format!("string.match({s}, {p})"));
            cases.push(format!("{{ string.gsub({s}, {p}, \"<%0>\") }}"));
            cases.push(format!(
                "(function() local t = {{}} for a, b in string.gmatch({s}, {p}) do t[#t + 1] = {{ a, b }} if #t > 50 then break end end return t end)()"
            ));
        }
    }
    for s in SUBJECTS {
        for p in [
            r#""(%w+)""#,
            r#""%w+""#,
            r#""()""#,
            r#""(o)""#,
            r#""(a)(b""#,
            r#""(a""#,
        ] {
            for repl in [
                r#""[%1]""#,
                r#""%0%0""#,
                r#""%%""#,
                r#""%2""#,
                r#""x%""#,
                r#""%x""#,
                "7",
                "function(a, b) return a and a:upper() end",
                "function() return false end",
                "function() return {} end",
                "function(...) return select('#', ...) end",
                "{ hello = 'HI', a = false, o = 0 }",
                "setmetatable({}, { __index = function(_, k) return '<' .. tostring(k) .. '>' end })",
                "true",
            ] {
                cases.push(format!("{{ string.gsub({s}, {p}, {repl}) }}"));
                cases.push(format!("{{ string.gsub({s}, {p}, {repl}, 1) }}"));
            }
        }
        for init in [
            "1", "2", "-1", "-3", "0", "-100", "100", "'2'", "2.0", "2.5", "{}",
        ] {
            cases.push(format!("string.find({s}, \"o\", {init})"));
            cases.push(format!("string.find({s}, \".\", {init}, true)"));
            cases.push(format!("string.match({s}, \"(.)\", {init})"));
            cases.push(format!(
                "(function() local t = {{}} for a in string.gmatch({s}, \".\", {init}) do t[#t + 1] = a end return t end)()"
            ));
        }
    }
    for extra in [
        "string.find('a+b', '+', 1, true)",
        "string.find('a.b', '.', 1, 1)",
        "string.find('abc', 'b', nil, nil)",
        "string.find(12345, 34)",
        "string.find(1.5, '.', 1, true)",
        "string.find()",
        "string.find('x')",
        "string.find(nil, 'x')",
        "string.find({}, 'x')",
        "string.find(setmetatable({}, { __name = 'Thing' }), 'x')",
        "('x'):find({})",
        "('x'):find()",
        "('x'):gsub('x')",
        "('x'):gsub('x', 'y', 'z')",
        "('x'):gsub('x', 'y', 1.5)",
        "string.gsub('abc', 'b', 'y', -1)",
        "string.gsub('abc', '', '-')",
        "string.gsub('abc', '^', '-')",
        "string.gsub('abc', '$', '-')",
        "string.gsub('abc', '^%w', '-')",
        "string.gsub('abc', '%w*', '-')",
        "string.gsub('hello world', '(o)', { o = 1.5 })",
        "string.gsub('abc', '%w', '%1%1')",
        "local f = string.find; return f(nil)",
        "pcall(string.find)",
        "string.gmatch()",
        "string.gmatch('x', '(')()",
        "string.gmatch('abc', '^a')()",
        "string.match('  x', '^%s*()')",
        "string.match('key = value', '(%w+)%s*=%s*(%w+)')",
        "string.find(('a'):rep(100), ('a'):rep(50) .. 'b')",
        "string.match(string.rep('(', 40), string.rep('%(', 33))",
        "string.match('x', string.rep('(', 33) .. 'x' .. string.rep(')', 33))",
        "string.match(string.rep('a', 300), string.rep('a?', 300) .. string.rep('a', 300))",
        "string.rep('ab', 3, ',')",
        "string.rep('x', 0)",
        "string.rep('x', -1, 'y')",
        "string.rep('', 5)",
        "string.rep('x', 2, '')",
        "string.rep(5, '2')",
        "string.rep()",
        "string.rep('x')",
        "string.rep('x', 1.5)",
        "string.rep('x', 2, {})",
        "('x'):rep()",
        "string.rep('x', math.maxinteger, 'y')",
        "string.rep('x', 2^31)",
        "string.rep('xy', 2^30, '')",
        "#string.rep('x', 2^10, 'yz')",
        // Not in a tail call: xpcall stays a Lua function (a coroutine may
        // yield inside it), and a Lua function called in a tail call no
        // longer knows its caller's line.
        "(xpcall(print))",
        "(xpcall(print, nil))",
        "xpcall(error, function(m) return 'handled ' .. m end, 'boom', 0)",
        "setmetatable(1, {})",
        "setmetatable({}, 1)",
        "setmetatable({})",
        "setmetatable(setmetatable({}, { __metatable = 'locked' }), {})",
        "getmetatable(setmetatable({}, { __metatable = 'locked' }))",
    ] {
        cases.push(extra.to_string());
    }
    same_as_lua(cases);
}

#[test]
fn table_functions_keep_lua_semantics() {
    let proxy = "setmetatable({}, { __index = function(_, i) if i <= 5 then return 10 - i end end, __len = function() return 5 end, __newindex = function(t, k, v) rawset(t, k, v) end })";
    let mut cases: Vec<String> = [
        "(function() local t = {1, 2, 3} table.insert(t, 'x') return t end)()",
        "(function() local t = {1, 2, 3} table.insert(t, 1, 'x') return t end)()",
        "(function() local t = {1, 2, 3} table.insert(t, 4, 'x') return t end)()",
        "(function() local t = {1, 2, 3} table.insert(t, 2, nil) return t end)()",
        "table.insert({1, 2, 3}, 5, 'x')",
        "table.insert({1, 2, 3}, 0, 'x')",
        "table.insert({1, 2, 3}, -1, 'x')",
        "table.insert({}, 1, 2, 3)",
        "table.insert({})",
        "table.insert(nil, 1)",
        "table.insert('abc', 1)",
        "table.insert({}, 'a', 1)",
        "table.insert({}, 1.5, 1)",
        "table.insert(setmetatable({}, { __len = function() return 'x' end }), 1)",
        "table.insert(setmetatable({}, { __len = function() return 2.0 end }), 1)",
        "(function() local t = {1, 2, 3} return table.remove(t), t end)()",
        "(function() local t = {1, 2, 3} return table.remove(t, 1), t end)()",
        "(function() local t = {1, 2, 3} return table.remove(t, 4), t end)()",
        "(function() local t = {} return table.remove(t), table.remove(t, 0), t end)()",
        "table.remove({1, 2, 3}, 5)",
        "table.remove({1, 2, 3}, 0)",
        "table.remove({}, -1)",
        "table.remove()",
        "table.remove({1}, '1')",
        "(function() local t = {1, 2, 3, 4, 5} table.move(t, 2, 4, 1) return t end)()",
        "(function() local t = {1, 2, 3, 4, 5} table.move(t, 1, 3, 3) return t end)()",
        "table.move({1, 2, 3}, 1, 3, 2, {})",
        "table.move({1, 2, 3}, 3, 1, 1)",
        "table.move({1, 2}, 1, math.maxinteger, 2)",
        "table.move({1, 2}, -1, math.maxinteger, 2)",
        "table.move({1, 2}, 1, 2, math.maxinteger)",
        "table.move({1, 2}, 1, 2)",
        "table.move({1, 2}, 1, 2, 1, 'x')",
        "table.move(nil, 1, 2, 1)",
        "table.concat({1, 2, 'a'}, ', ')",
        "table.concat({1, 2.5, 'a'})",
        "table.concat({1, {}, 3})",
        "table.concat({1, 2, 3}, '-', 2)",
        "table.concat({1, 2, 3}, '-', 2, 5)",
        "table.concat({}, 'x', 1, 0)",
        "table.concat({1, 2}, {})",
        "table.concat({1, 2}, 3)",
        "table.concat(nil)",
        "table.concat({1, 2}, '', '1', 2.0)",
        "(function() local t = {3, 1, 2} table.sort(t) return t end)()",
        "(function() local t = {'b', 'c', 'a'} table.sort(t, function(a, b) return a > b end) return t end)()",
        "(function() local t = {3, 1, 2} table.sort(t, 1) return t end)()",
        "table.sort({1, {}, 2})",
        "table.sort({3, 2, 1, 5, 4, 6}, function(a, b) return true end)",
        "table.sort(nil)",
        "table.sort({}, 1)",
        "table.sort({1}, 1)",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for op in [
        "table.insert(P, 2, 'x')",
        "table.insert(P, 'x')",
        "table.remove(P, 2)",
        "table.remove(P)",
        "table.move(P, 1, 5, 2)",
        "table.move(P, 1, 5, 1, {})",
        "table.concat(P, ',')",
        "table.concat(P, ',', 4, 7)",
        "table.sort(P)",
        "table.sort(P, function(a, b) return a > b end)",
    ] {
        let src = op.replace('P', "p");
        cases.push(format!(
            "(function() local p = {proxy} local r = {{ {src} }} local t = {{}} for i = 1, 7 do t[i] = p[i] end return r, t end)()"
        ));
    }
    same_as_lua(cases);
}
