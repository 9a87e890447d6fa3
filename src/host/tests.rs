//! The host's guarantees, checked on a bare VM: every execution ends within
//! its budget whatever the script does, and the sandbox refuses what it
//! leaves out with a message that says why.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use mlua::Value;

use super::{CallOptions, Cancel, StopKind, Vm, VmOptions};
use crate::config::LuaLimits;

/// Budget of the tests: small enough that a runaway script stops in well
/// under a second of Lua.
const SMALL: u64 = 20_000_000;

fn options(instruction_limit: u64) -> VmOptions {
    VmOptions {
        limits: LuaLimits {
            instruction_limit,
            ..LuaLimits::default()
        },
        ..VmOptions::default()
    }
}

/// Runs `src` in a fresh VM on a thread of its own, so a script that never
/// ends fails the test instead of hanging it. The VM is dropped (and its
/// finalizers run) before the result is sent. `Err` is the script's error.
fn run_within(src: &str, opts: VmOptions, secs: u64) -> Result<String, String> {
    let (tx, rx) = mpsc::channel();
    let owned = src.to_string();
    std::thread::spawn(move || {
        let src = owned;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = rt.block_on(async {
            let vm = Vm::new(&opts).map_err(|e| e.message)?;
            let f = vm
                .load_source(src.as_bytes(), "=test")
                .map_err(|e| e.message)?;
            let out = vm.call(f, ()).await.map_err(|e| e.message);
            let out = out.map(|values| {
                values
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => s.to_string_lossy(),
                        other => super::pretty::pretty(other),
                    })
                    .collect::<Vec<_>>()
                    .join("\t")
            });
            drop(vm);
            out
        });
        let _ = tx.send(result);
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(r) => r,
        Err(_) => panic!("the script did not end within {secs} s:\n{}", src),
    }
}

#[track_caller]
fn fails_with(src: &str, opts: VmOptions, expected: &str) {
    match run_within(src, opts, 20) {
        Ok(v) => panic!("{src}\nsucceeded ({v}), expected an error containing {expected:?}"),
        Err(e) => assert!(
            e.contains(expected),
            "{src}\nfailed with {e:?}, expected {expected:?}"
        ),
    }
}

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

/// A VM with no budget to speak of: only the other stops can end a loop.
fn unbudgeted() -> Vm {
    Vm::new(&options(u64::MAX / 2)).unwrap()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `f` on a thread of its own and fails the test if it takes longer than `secs`.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("did not end within {secs} s"))
}

#[test]
fn a_running_script_lets_the_other_tasks_of_its_thread_run() {
    within(20, || {
        let rt = current_thread();
        let vm = unbudgeted();
        let spin = vm.load_source(b"while true do end", "=spin").unwrap();
        let started = Instant::now();
        // On a one-thread runtime the timer can only fire if the loop yields.
        let r = rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(200), vm.call(spin, ())).await
        });
        assert!(r.is_err(), "the loop ended by itself: {r:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // The abandoned call left the VM usable.
        let f = vm.load_source(b"return 40 + 2", "=after").unwrap();
        let v = rt.block_on(vm.call(f, ())).unwrap();
        assert_eq!(v.into_iter().next(), Some(Value::Integer(42)));
    });
}

#[test]
fn yielding_leaves_the_scripts_own_coroutines_alone() {
    // Each resume runs long enough for the hook to want a yield (10 ms).
    let src = r#"
        local co = coroutine.create(function(a)
          local seen = {}
          for round = 1, 5 do
            local x = 0
            for i = 1, 3e5 do x = x + i end
            seen[#seen + 1] = a .. ":" .. x
            a = coroutine.yield(round)
          end
          return table.concat(seen, ",")
        end)
        local out, arg = {}, "a"
        while true do
          local ok, v = coroutine.resume(co, arg)
          assert(ok, v)
          out[#out + 1] = tostring(v)
          if coroutine.status(co) == "dead" then break end
          arg = string.char(97 + #out)
        end
        return table.concat(out, "|")
    "#;
    let sum = (1..=300_000u64).sum::<u64>();
    let expected = format!("1|2|3|4|5|a:{sum},b:{sum},c:{sum},d:{sum},e:{sum}");
    assert_eq!(run_within(src, options(1_000_000_000), 60), Ok(expected));
}

#[test]
fn a_deadline_stops_a_call_running_or_waiting() {
    within(20, || {
        let rt = current_thread();
        let vm = unbudgeted();
        let sleep = vm
            .lua()
            .create_async_function(|_, secs: f64| async move {
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                Ok(())
            })
            .unwrap();
        vm.lua().globals().set("sleep", sleep).unwrap();
        for (src, at) in [
            ("local n = 0 while true do n = n + 1 end", "spin:1: "),
            ("sleep(60)", ""),
            (
                "while true do pcall(function() while true do end end) end",
                "spin:1: ",
            ),
            ("while true do pcall(sleep, 60) end", ""),
        ] {
            let f = vm.load_source(src.as_bytes(), "=spin").unwrap();
            let opts = CallOptions {
                deadline: Some((
                    Instant::now() + Duration::from_millis(200),
                    "took too long".into(),
                )),
                ..CallOptions::default()
            };
            let started = Instant::now();
            let e = rt.block_on(vm.call_with(f, (), opts)).unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(3), "{src}");
            assert_eq!(e.stopped, Some(StopKind::Deadline), "{src}: {e}");
            assert!(
                e.message.starts_with(&format!("{at}took too long")),
                "{src}: {e}"
            );
        }
    });
}

#[test]
fn a_cancel_stops_a_call_where_it_cannot_yield() {
    within(20, || {
        let rt = current_thread();
        let vm = unbudgeted();
        let cancel = Cancel::new();
        let c = cancel.clone();
        // From another thread: the loop runs in a sort comparator, where
        // the VM cannot yield, so only the hook can stop it.
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            c.cancel("cancelled: the test is over");
        });
        let f = vm
            .load_source(
                b"table.sort({3, 2, 1}, function(a, b) while true do end end)",
                "=cmp",
            )
            .unwrap();
        let opts = CallOptions {
            cancel: Some(cancel),
            ..CallOptions::default()
        };
        let e = rt.block_on(vm.call_with(f, (), opts)).unwrap_err();
        assert_eq!(e.stopped, Some(StopKind::Cancelled), "{e}");
        assert!(
            e.message.starts_with("cmp:1: cancelled: the test is over"),
            "{e}"
        );
    });
}

#[test]
fn a_signal_stops_a_call_that_watches_for_it() {
    super::signals::watch(&[libc::SIGUSR2]).unwrap();
    within(20, || {
        let rt = current_thread();
        let vm = unbudgeted();
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(200));
            // SAFETY: raising a signal this process handles.
            unsafe { libc::raise(libc::SIGUSR2) };
        });
        let f = vm
            .load_source(b"while true do coroutine.resume(coroutine.create(function() while true do end end)) end", "=sig")
            .unwrap();
        let opts = CallOptions {
            signals_after: Some(super::signals::count()),
            ..CallOptions::default()
        };
        let e = rt.block_on(vm.call_with(f, (), opts)).unwrap_err();
        assert_eq!(e.stopped, Some(StopKind::Signal(libc::SIGUSR2)), "{e}");
        assert!(e.message.starts_with("sig:1: interrupted by "), "{e}");
    });
}

#[test]
fn removed_functions_say_what_they_are_and_why() {
    for (call, message) in [
        (
            "io.open('/etc/passwd')",
            "io.open is not available to skiff scripts: scripts cannot open files by name; use fs.read",
        ),
        (
            "io.lines('/etc/passwd')",
            "io.lines is not available to skiff scripts: scripts cannot read files by name",
        ),
        ("io.input('/etc/passwd')", "io.input is not available"),
        ("io.output('/tmp/x')", "io.output is not available"),
        ("io.read()", "io.read is not available"),
        ("io.close()", "io.close is not available"),
        ("io.tmpfile()", "io.tmpfile is not available"),
        ("io.popen('id')", "io.popen is not available to skiff scripts: scripts cannot run programs"),
        (
            "os.getenv('SKIFF_PASSWORD')",
            "os.getenv is not available to skiff scripts: the environment holds secrets (SKIFF_PASSWORD, AWS_SECRET_ACCESS_KEY, …)",
        ),
        ("os.execute('id')", "os.execute is not available"),
        ("os.exit(1)", "os.exit is not available"),
        ("os.remove('/tmp/x')", "os.remove is not available"),
        ("os.rename('/tmp/x', '/tmp/y')", "os.rename is not available"),
        ("os.tmpname()", "os.tmpname is not available"),
        ("os.setlocale('C')", "os.setlocale is not available"),
        ("dofile('/etc/passwd')", "dofile is not available"),
        ("loadfile('/etc/passwd')", "loadfile is not available"),
        ("package.loadlib('x', 'y')", "package.loadlib is not available"),
        ("package.searchpath('x', '/etc/?')", "package.searchpath is not available"),
        ("debug.getinfo(1)", "debug.getinfo is not available to skiff scripts: the debug library"),
        ("debug.sethook()", "debug.sethook is not available"),
    ] {
        let src = format!("return {call}");
        fails_with(&src, options(SMALL), &format!("test:1: {message}"));
    }
    // What stays.
    assert_eq!(
        run_within(
            "io.write('') io.stdout:write('') return type(os.time()), type(os.clock()), os.date('!%Y', 0), debug.traceback('here', 1):match('^here\\nstack traceback:') ~= nil, io.type(io.stdout)",
            options(SMALL),
            20
        ),
        Ok("number\tnumber\t1970\ttrue\tfile".into())
    );
    // --unsafe-lua keeps the full library.
    let unsafe_opts = VmOptions {
        unsafe_lua: true,
        ..options(SMALL)
    };
    assert_eq!(
        run_within(
            "local f = assert(io.open('/dev/null')) f:close() return type(os.getenv('PATH')), type(debug.getinfo)",
            unsafe_opts,
            20
        ),
        Ok("string\tfunction".into())
    );
}
