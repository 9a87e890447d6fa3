//! Who owns a worker, or a snapshot being written: the skiff process that
//! made it, written into the `skiff:owner` tag as `host:pid:start`. The
//! reaper on the same host treats a worker whose owner is gone as belonging
//! to a job that is no longer known, and an incomplete snapshot whose owner
//! is gone as abandoned. (The process start time guards against a reused pid.)

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This process, as an owner tag value.
pub fn this_owner() -> String {
    let pid = std::process::id();
    format!("{}:{pid}:{}", host(), start_ticks(pid).unwrap_or(0))
}

/// Whether the owner named by a tag is alive: `Some` when it ran on this
/// host (and so can be checked), `None` when it ran elsewhere.
pub fn owner_alive(owner: &str) -> Option<bool> {
    let mut parts = owner.rsplitn(3, ':');
    let start: u64 = parts.next()?.parse().ok()?;
    let pid: u32 = parts.next()?.parse().ok()?;
    let h = parts.next()?;
    if h != host() {
        return None;
    }
    Some(start_ticks(pid).is_some_and(|s| s == start || start == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_dead_one_is_not() {
        assert_eq!(owner_alive(&this_owner()), Some(true));
        let me = this_owner();
        let (rest, _) = me.rsplit_once(':').unwrap();
        assert_eq!(
            owner_alive(&format!("{rest}:1")),
            Some(false),
            "same pid, other start time"
        );
        assert_eq!(owner_alive(&format!("{}:4194303:5", host())), Some(false));
        assert_eq!(owner_alive("elsewhere.example:1:1"), None);
        assert_eq!(owner_alive("garbage"), None);
    }
}
