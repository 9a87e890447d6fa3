//! When a policy runs: a cron expression (5 fields, or 6 with seconds first,
//! or `@hourly`…`@yearly`) or a table of daily/weekly/monthly/yearly runs,
//! each turned into cron expressions whose union is the schedule. The
//! option is read straight from Lua into [`ScheduleSpec`] (unknown keys
//! refused), then checked and built by [`Schedule::from_spec`].
//!
//! Schedules are in UTC: no daylight-saving gaps or repeats, so a run never
//! fires twice or not at all when clocks change.

use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

mod table;

pub use table::{DayArg, Monthly, OneOrMany, ScheduleSpec, Table, Weekly, Yearly};

/// One cron expression of a schedule, with what the user wrote for it.
#[derive(Clone)]
pub struct Entry {
    /// As written: `"*/5 * * * * *"`, `"@daily"`, `"weekly sun 03:00"`.
    pub text: String,
    /// The same as a 6-field expression (seconds first).
    expr: String,
    cron: Cron,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Entry({:?} = {:?})", self.text, self.expr)
    }
}

impl Entry {
    /// The expression with seconds, as croner reads it.
    pub fn cron(&self) -> &str {
        &self.expr
    }
}

/// A policy's schedule: it fires at every time any of its entries matches.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub entries: Vec<Entry>,
}

const CRON_HELP: &str = "expected 5 fields (minute hour day month weekday), 6 with seconds first, or @hourly, @daily, @weekly, @monthly, @yearly";

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

fn parse_cron(expr: &str, text: String) -> Result<Entry, String> {
    let trimmed = expr.trim();
    if trimmed.starts_with('@')
        && !matches!(
            trimmed.to_ascii_lowercase().as_str(),
            "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@hourly"
        )
    {
        return Err(format!(
            "unknown shortcut {trimmed:?}; expected @hourly, @daily, @weekly, @monthly or @yearly"
        ));
    }
    let fields = trimmed.split_whitespace().count();
    if !trimmed.starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "invalid cron expression {trimmed:?}: {fields} fields; {CRON_HELP}"
        ));
    }
    let cron = parser().parse(trimmed).map_err(|e| {
        let detail = e.to_string();
        let detail = detail
            .strip_prefix("Invalid pattern: ")
            .or_else(|| detail.strip_prefix("Component error: "))
            .or_else(|| detail.strip_prefix("Pattern contains illegal characters: "))
            .unwrap_or(&detail)
            .trim_end_matches('.')
            .to_string();
        format!("invalid cron expression {trimmed:?}: {detail}; {CRON_HELP}")
    })?;
    let expr = match trimmed.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 0 1 1 *".to_string(),
        "@monthly" => "0 0 0 1 * *".to_string(),
        "@weekly" => "0 0 0 * * 0".to_string(),
        "@daily" => "0 0 0 * * *".to_string(),
        "@hourly" => "0 0 * * * *".to_string(),
        _ if fields == 5 => format!(
            "0 {}",
            trimmed.split_whitespace().collect::<Vec<_>>().join(" ")
        ),
        _ => trimmed.split_whitespace().collect::<Vec<_>>().join(" "),
    };
    let entry = Entry { text, expr, cron };
    // A pattern such as "0 0 30 2 *" parses but never matches.
    if entry.next_after(Utc::now()).is_none() {
        return Err(format!("cron expression {trimmed:?} never fires"));
    }
    Ok(entry)
}

impl Entry {
    fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Whole seconds: croner works in seconds, and "after 02:00:00.4" must
        // not give 02:00:00 again.
        let from = t.trunc_subsecs(0);
        self.cron.find_next_occurrence(&from, false).ok()
    }

    fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.trunc_subsecs(0), true)
            .ok()
    }
}

impl Schedule {
    /// A schedule from one cron expression or shortcut.
    pub fn cron(expr: &str) -> Result<Schedule, String> {
        Ok(Schedule {
            entries: vec![parse_cron(expr, expr.trim().to_string())?],
        })
    }

    /// The schedule a `schedule` option describes; a failure names the
    /// field below `schedule` that is wrong ("" for `schedule` itself).
    pub fn from_spec(spec: &ScheduleSpec) -> Result<Schedule, (String, String)> {
        match spec {
            ScheduleSpec::Cron(expr) => Schedule::cron(expr).map_err(|e| (String::new(), e)),
            ScheduleSpec::Table(t) => Schedule::table(t),
        }
    }

    /// The first time strictly after `t` at which the schedule fires.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.entries.iter().filter_map(|e| e.next_after(t)).min()
    }

    /// The latest time at or before `t` at which the schedule fired.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.entries
            .iter()
            .filter_map(|e| e.last_at_or_before(t))
            .max()
    }

    /// If a time between `since` (exclusive) and `now` (inclusive) was
    /// missed, the latest such time: the one a catch-up run stands for.
    pub fn missed(&self, since: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let next = self.next_after(since)?;
        (next <= now).then(|| self.last_at_or_before(now).unwrap_or(next))
    }

    /// The expressions as written, joined with "; ".
    pub fn describe(&self) -> String {
        self.entries
            .iter()
            .map(|e| e.text.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    pub(super) fn nexts(s: &Schedule, from: &str, n: usize) -> Vec<String> {
        let mut t = at(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = s.next_after(t).unwrap();
            out.push(t.to_rfc3339());
        }
        out
    }

    #[test]
    fn cron_with_and_without_seconds() {
        let s = Schedule::cron("*/20 * * * * *").unwrap();
        assert_eq!(
            nexts(&s, "2026-01-01T00:00:00Z", 3),
            [
                "2026-01-01T00:00:20+00:00",
                "2026-01-01T00:00:40+00:00",
                "2026-01-01T00:01:00+00:00"
            ]
        );
        let s = Schedule::cron("30 2 * * *").unwrap();
        assert_eq!(
            nexts(&s, "2026-01-01T02:30:00Z", 2),
            ["2026-01-02T02:30:00+00:00", "2026-01-03T02:30:00+00:00"],
            "strictly after: the time itself is not next"
        );
        // Sub-second start times do not repeat the current second.
        let s = Schedule::cron("* * * * * *").unwrap();
        let t = at("2026-01-01T00:00:00.400Z");
        assert_eq!(s.next_after(t).unwrap(), at("2026-01-01T00:00:01Z"));
    }

    #[test]
    fn shortcuts() {
        for (expr, want) in [
            ("@hourly", "2026-03-04T06:00:00+00:00"),
            ("@daily", "2026-03-05T00:00:00+00:00"),
            ("@weekly", "2026-03-08T00:00:00+00:00"), // a Sunday
            ("@monthly", "2026-04-01T00:00:00+00:00"),
            ("@yearly", "2027-01-01T00:00:00+00:00"),
        ] {
            let s = Schedule::cron(expr).unwrap();
            assert_eq!(nexts(&s, "2026-03-04T05:10:00Z", 1), [want], "{expr}");
        }
        assert!(Schedule::cron("@fortnightly")
            .unwrap_err()
            .contains("unknown shortcut \"@fortnightly\""));
    }

    #[test]
    fn bad_expressions_are_explained() {
        let e = Schedule::cron("* * *").unwrap_err();
        assert!(
            e.starts_with("invalid cron expression \"* * *\": 3 fields; expected 5 fields"),
            "{e}"
        );
        let e = Schedule::cron("0 0 0 * * * 2026").unwrap_err();
        assert!(e.contains("7 fields"), "{e}");
        let e = Schedule::cron("61 * * * *").unwrap_err();
        assert!(
            e.starts_with("invalid cron expression \"61 * * * *\""),
            "{e}"
        );
        let e = Schedule::cron("0 0 30 2 *").unwrap_err();
        assert_eq!(e, "cron expression \"0 0 30 2 *\" never fires");
        assert!(Schedule::cron("x y z a b").is_err());
        assert!(Schedule::cron("").is_err());
    }

    #[test]
    fn utc_has_no_daylight_saving_gaps() {
        // 02:30 every day across the European and US spring-forward nights:
        // in UTC every day has exactly one run, 24 hours apart.
        let s = Schedule::cron("0 30 2 * * *").unwrap();
        let got = nexts(&s, "2026-03-07T00:00:00Z", 25);
        for pair in got.windows(2) {
            let a = at(&pair[0]);
            let b = at(&pair[1]);
            assert_eq!((b - a).num_hours(), 24, "{pair:?}");
        }
        assert!(got.contains(&"2026-03-08T02:30:00+00:00".to_string()));
        assert!(got.contains(&"2026-03-29T02:30:00+00:00".to_string()));
    }

    #[test]
    fn missed_runs() {
        let s = Schedule::cron("0 0 * * * *").unwrap(); // hourly
        let since = at("2026-01-01T10:00:00Z");
        assert_eq!(s.missed(since, at("2026-01-01T10:59:59Z")), None);
        assert_eq!(
            s.missed(since, at("2026-01-01T11:00:00Z")),
            Some(at("2026-01-01T11:00:00Z"))
        );
        assert_eq!(
            s.missed(since, at("2026-01-01T13:20:00Z")),
            Some(at("2026-01-01T13:00:00Z")),
            "several missed: one catch-up, standing for the latest"
        );
        let _ = Utc.timestamp_opt(0, 0);
    }
}
