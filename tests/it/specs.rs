//! The Lua specs in tests/lua, run by `skiff test` against the emulator.

use crate::harness::{account_toml, emulator, project_root, Workspace, LOCAL_WORKERS};

#[tokio::test]
async fn lua_specs_pass() {
    let emu = emulator();
    let other = emu.account().await;
    let ws = Workspace::new(&format!(
        "{}{LOCAL_WORKERS}",
        account_toml("other", &other, Some("eu-west-1"))
    ))
    .await;
    let specs = project_root().join("tests/lua");
    let out = ws
        .skiff(&[
            "test",
            "--config",
            ws.path("skiff.toml").to_str().unwrap(),
            specs.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.code, 0, "specs failed\n{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(" passed, 0 failed"), "{}", out.stdout);
}

#[tokio::test]
async fn a_failing_spec_fails_the_run() {
    let ws = Workspace::new("").await;
    ws.write(
        "x_spec.lua",
        "describe('math', function()\n  it('adds', function() expect(1 + 1):to_equal(2) end)\n  it('is wrong', function() expect(1 + 1):to_equal(3) end)\nend)\n",
    );
    let out = ws.skiff(&["test", "x_spec.lua"]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("✓ math adds"), "{}", out.stdout);
    assert!(out.stdout.contains("✗ math is wrong"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("x_spec.lua:3: value: expected 3, got 2"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("1 passed, 1 failed, 0 pending"),
        "{}",
        out.stdout
    );
}
