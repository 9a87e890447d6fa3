//! The other stops of a call — deadline, cancel, signal — and the yields
//! that let the runtime serve other tasks meanwhile.

use super::*;

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
    crate::host::signals::watch(&[libc::SIGUSR2]).unwrap();
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
            signals_after: Some(crate::host::signals::count()),
            ..CallOptions::default()
        };
        let e = rt.block_on(vm.call_with(f, (), opts)).unwrap_err();
        assert_eq!(e.stopped, Some(StopKind::Signal(libc::SIGUSR2)), "{e}");
        assert!(e.message.starts_with("sig:1: interrupted by "), "{e}");
    });
}
