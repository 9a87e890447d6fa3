//! What the sandbox leaves out says what it is and why.

use super::*;

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
