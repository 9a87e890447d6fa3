use super::*;

fn target(instance: &str) -> Target {
    let scope = Scope {
        account: "default".into(),
        region: "us-east-1".into(),
    };
    Target {
        instance: instance.into(),
        scope: scope.clone(),
        bucket: "b".into(),
        prefix: "skiff-flr/s/".into(),
        bucket_scope: scope,
    }
}

fn item(index: usize, path: &[u8]) -> Item {
    Item {
        index,
        path: path.to_vec(),
    }
}

fn invocation(status: &str, stdout: &str, stderr: &str) -> Invocation {
    Invocation {
        command_id: "c-1".into(),
        status: status.into(),
        details: status.into(),
        stdout: stdout.into(),
        stderr: stderr.into(),
    }
}

fn line(word: &str, k: usize, text: &[u8]) -> String {
    format!("skiff-restore {word} {k} {}\n", B64.encode(text))
}

#[test]
fn parse_reads_result_lines_and_skips_the_rest() {
    let out = format!(
        "tar: something said\n{}{}skiff-restore ok x Zm9v\nskiff-restore ok 3 !!!\nskiff-restore maybe 4 Zm9v\n{}",
        line("ok", 0, b"/etc/ssh.restored-20240102T030405Z"),
        line("failed", 1, b"/home/a leads outside / through a symbolic link; nothing written"),
        line("ok", 2, b"/srv/caf\xe9"),
    );
    let r = parse(&out);
    assert_eq!(r.len(), 3);
    assert_eq!(
        r[&0],
        (true, "/etc/ssh.restored-20240102T030405Z".to_string())
    );
    assert!(!r[&1].0 && r[&1].1.contains("symbolic link"));
    assert_eq!(r[&2], (true, "/srv/caf\u{fffd}".to_string()));
}

#[test]
fn outcomes_one_per_item_in_order() {
    let t = target("i-0123456789abcdef0");
    let items = [
        item(0, b"etc/ssh"),
        item(1, b"home/a/b.txt"),
        item(2, b"srv"),
    ];
    let inv = invocation(
        "Failed",
        &format!(
            "{}{}",
            line("ok", 0, b"/etc/ssh"),
            line("failed", 2, b"no space left")
        ),
        "",
    );
    let o = outcomes(&t, &items, &inv).unwrap();
    assert_eq!(
        o,
        vec![
            ItemOutcome {
                path: "etc/ssh".into(),
                ok: true,
                detail: "/etc/ssh".into()
            },
            ItemOutcome {
                path: "home/a/b.txt".into(),
                ok: false,
                detail: "no result from the instance (SSM command c-1 ended Failed)".into()
            },
            ItemOutcome {
                path: "srv".into(),
                ok: false,
                detail: "no space left".into()
            },
        ]
    );
}

#[test]
fn a_success_without_output_is_no_result_per_item() {
    let t = target("i-0123456789abcdef0");
    let items = [item(0, b"etc/ssh"), item(1, b"x")];
    let o = outcomes(&t, &items, &invocation("Success", "", "")).unwrap();
    assert!(o
        .iter()
        .all(|o| !o.ok && o.detail == "no result from the instance"));
}

#[test]
fn a_command_that_ended_without_results_is_an_error_naming_it() {
    let t = target("i-0123456789abcdef0");
    let e = outcomes(
        &t,
        &[item(0, b"a")],
        &invocation("TimedOut", "", "one\ntwo\nthree\nfour"),
    )
    .unwrap_err();
    assert_eq!(
        e,
        "SSM command c-1 on instance i-0123456789abcdef0 ended TimedOut (TimedOut: two / three / four)"
    );
}

#[test]
fn truncated_output_is_said() {
    let t = target("i-0123456789abcdef0");
    let mut out = line("ok", 0, b"/a");
    out.push_str(&"x".repeat(OUTPUT_KEPT));
    let o = outcomes(
        &t,
        &[item(0, b"a"), item(1, b"b")],
        &invocation("Success", &out, ""),
    )
    .unwrap();
    assert!(o[0].ok);
    assert!(o[1].detail.contains("24,000 characters"), "{}", o[1].detail);
}

#[test]
fn bad_input_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.tar");
    std::fs::write(&archive, b"").unwrap();
    let ok = target("i-0123456789abcdef0");
    let items = [item(0, b"etc/ssh")];
    assert_eq!(check(&ok, Some("0a1b-2c"), &archive, &items), Ok(()));
    assert_eq!(check(&target("i-12345678"), None, &archive, &items), Ok(()));

    for bad in [
        "",
        "i-",
        "i-xyz",
        "0123456789abcdef0",
        "i-0123456789abcdef0; reboot",
    ] {
        let e = check(&target(bad), None, &archive, &items).unwrap_err();
        assert!(e.starts_with("instance: "), "{e}");
    }
    assert_eq!(
        check(&ok, None, &archive, &[]).unwrap_err(),
        "items: nothing is selected to restore"
    );
    assert_eq!(
        check(&ok, Some("x'; reboot"), &archive, &items).unwrap_err(),
        "fs_uuid: \"x'; reboot\" is not a filesystem UUID"
    );
    for (path, why) in [
        (&b""[..], "the filesystem's root is not an item"),
        (b"/etc", "relative"),
        (b"etc/../root", "`..`"),
        (b"./etc", "`.`"),
        (b"etc//ssh", "empty"),
        (b"etc/ssh/", "empty"),
        (b"a\0b", "NUL"),
    ] {
        let e = check(&ok, None, &archive, &[item(0, b"fine"), item(1, path)]).unwrap_err();
        assert!(e.starts_with("items[1].path "), "{e}");
        assert!(e.contains(why), "{e}");
    }
    assert_eq!(
        check(&ok, None, &archive, &[item(4, b"a"), item(4, b"b")]).unwrap_err(),
        "items[1].index: 4 is used by another item"
    );
    let e = check(&ok, None, &dir.path().join("gone.tar"), &items).unwrap_err();
    assert!(
        e.starts_with(&format!("archive {}/gone.tar: ", dir.path().display())),
        "{e}"
    );
    let e = check(&ok, None, dir.path(), &items).unwrap_err();
    assert!(e.ends_with(": not a file"), "{e}");
}

#[test]
fn names_reach_the_script_only_as_base64() {
    let nasty: &[u8] = b"srv/$(touch pwned)/it's \"a\"\nb`id` \xff";
    let s = script(
        "https://b.s3.amazonaws.com/k?X-Amz-Signature=ab&x=$(id)",
        Some("0a1b"),
        &[item(7, nasty)],
        false,
        "20240102T030405Z",
    );
    assert!(s.is_ascii());
    assert!(!s.contains("$(touch"), "{s}");
    assert!(!s.contains("$(id)"), "{s}");
    let items_line = s.lines().find(|l| l.starts_with("ITEMS=")).unwrap();
    let words: Vec<&str> = items_line
        .trim_start_matches("ITEMS='")
        .trim_end_matches('\'')
        .split(' ')
        .collect();
    assert_eq!(words[0], "7");
    assert_eq!(B64.decode(words[1]).unwrap(), nasty);
    assert_eq!(B64.decode(words[2]).unwrap(), b"it's \"a\"\nb`id` \xff");
    assert!(s.contains("OVERWRITE=0\n"));
    assert!(s.starts_with("#!/bin/sh\n"));
}

#[test]
fn comment_names_skiff_and_the_items_in_100_characters() {
    assert_eq!(
        comment(&[item(0, b"etc/ssh"), item(1, b"a\nb")]),
        "skiff flr restore: etc/ssh, a?b"
    );
    let long = comment(&[item(0, &[b'x'; 300])]);
    assert_eq!(long.chars().count(), 100);
    assert!(long.starts_with("skiff flr restore: xxx") && long.ends_with('…'));
}

#[test]
fn stamp_is_compact_utc() {
    let t = DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z")
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(stamp(t), "20240102T030405Z");
}

/// The script with no mount point to find says so for every item.
#[test]
fn script_without_a_mount_point_fails_every_item() {
    let s = script(
        "http://127.0.0.1:9/none",
        None,
        &[item(0, b"a"), item(3, b"b c")],
        true,
        "x",
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&s)
        .env_remove("SKIFF_RESTORE_ROOT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let r = parse(&String::from_utf8(out.stdout).unwrap());
    let why = "the filesystem has no UUID, so where it is mounted on this instance cannot be found";
    assert_eq!(r.len(), 2);
    assert_eq!(r[&0], (false, why.to_string()));
    assert_eq!(r[&3], (false, why.to_string()));
}
