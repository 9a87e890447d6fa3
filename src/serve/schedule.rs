//! When a policy runs: a cron expression (5 fields, or 6 with seconds first,
//! or `@hourly`…`@yearly`) or a table of daily/weekly/monthly/yearly runs,
//! each turned into cron expressions whose union is the schedule.
//!
//! Schedules are in UTC: no daylight-saving gaps or repeats, so a run never
//! fires twice or not at all when clocks change.

use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

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

    /// A schedule from the table form (see [`Table`]).
    pub fn table(t: &Table) -> Result<Schedule, (String, String)> {
        let mut entries = Vec::new();
        for (i, at) in t.daily.iter().enumerate() {
            let field = t.field("daily", i);
            let (h, m, s) = time_of_day(at).map_err(|e| (field.clone(), e))?;
            entries.push(built(
                format!("{s} {m} {h} * * *"),
                format!("daily {at}"),
                &field,
            )?);
        }
        for (i, w) in t.weekly.iter().enumerate() {
            let field = t.field("weekly", i);
            let (h, m, s) = time_of_day(&w.at).map_err(|e| (format!("{field}.at"), e))?;
            let mut days = Vec::new();
            for d in &w.day {
                days.push(weekday(d).map_err(|e| (format!("{field}.day"), e))?);
            }
            if days.is_empty() {
                return Err((format!("{field}.day"), "name at least one day".into()));
            }
            let nums: Vec<String> = days.iter().map(|(n, _)| n.to_string()).collect();
            let names: Vec<&str> = days.iter().map(|(_, n)| *n).collect();
            entries.push(built(
                format!("{s} {m} {h} * * {}", nums.join(",")),
                format!("weekly {} {}", names.join(","), w.at),
                &field,
            )?);
        }
        for (i, mo) in t.monthly.iter().enumerate() {
            let field = t.field("monthly", i);
            let (h, m, s) = time_of_day(&mo.at).map_err(|e| (format!("{field}.at"), e))?;
            let mut days = Vec::new();
            for d in &mo.day {
                days.push(day_of_month(d, None).map_err(|e| (format!("{field}.day"), e))?);
            }
            if days.is_empty() {
                return Err((format!("{field}.day"), "name at least one day".into()));
            }
            let days = days.join(",");
            entries.push(built(
                format!("{s} {m} {h} {days} * *"),
                format!("monthly {days} {}", mo.at),
                &field,
            )?);
        }
        for (i, y) in t.yearly.iter().enumerate() {
            let field = t.field("yearly", i);
            let (h, m, s) = time_of_day(&y.at).map_err(|e| (format!("{field}.at"), e))?;
            let month = month(&y.month).map_err(|e| (format!("{field}.month"), e))?;
            let day = day_of_month(&y.day, Some(month)).map_err(|e| (format!("{field}.day"), e))?;
            entries.push(built(
                format!("{s} {m} {h} {day} {month} *"),
                format!("yearly {} {day} {}", MONTHS[month as usize - 1], y.at),
                &field,
            )?);
        }
        if entries.is_empty() {
            return Err((
                String::new(),
                "an empty schedule table; give daily, weekly, monthly or yearly runs".into(),
            ));
        }
        Ok(Schedule { entries })
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

fn built(expr: String, text: String, field: &str) -> Result<Entry, (String, String)> {
    parse_cron(&expr, text).map_err(|e| (field.to_string(), e))
}

/// The table form of a schedule, as read from Lua:
/// `{daily = "02:00", weekly = {day = "sun", at = "03:00"}, monthly = {day = 1, at = "04:00"},
/// yearly = {month = "jan", day = 1, at = "05:00"}}`; each may also be a list of such runs.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub daily: Vec<String>,
    pub weekly: Vec<Weekly>,
    pub monthly: Vec<Monthly>,
    pub yearly: Vec<Yearly>,
    /// Which kinds were given as lists (for field names in messages).
    pub listed: Vec<&'static str>,
}

impl Table {
    fn field(&self, kind: &'static str, i: usize) -> String {
        if self.listed.contains(&kind) {
            format!("{kind}[{}]", i + 1)
        } else {
            kind.to_string()
        }
    }
}

#[derive(Debug, Clone)]
pub struct Weekly {
    pub day: Vec<DayArg>,
    pub at: String,
}

#[derive(Debug, Clone)]
pub struct Monthly {
    pub day: Vec<DayArg>,
    pub at: String,
}

#[derive(Debug, Clone)]
pub struct Yearly {
    pub month: DayArg,
    pub day: DayArg,
    pub at: String,
}

/// A day or month given as a number or a name.
#[derive(Debug, Clone, PartialEq)]
pub enum DayArg {
    Number(i64),
    Name(String),
}

impl fmt::Display for DayArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DayArg::Number(n) => write!(f, "{n}"),
            DayArg::Name(s) => write!(f, "{s:?}"),
        }
    }
}

const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const DAY_NAMES: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const MONTH_NAMES: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// `"02:00"`, `"2:00"`, `"23:59:30"` → (hour, minute, second).
fn time_of_day(s: &str) -> Result<(u32, u32, u32), String> {
    let bad = || format!("expected a time of day \"HH:MM\" or \"HH:MM:SS\" (UTC), got {s:?}");
    let parts: Vec<&str> = s.trim().split(':').collect();
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    let n: Vec<u32> = parts.iter().map(|p| p.parse().unwrap()).collect();
    let (h, m, sec) = (n[0], n[1], n.get(2).copied().unwrap_or(0));
    if h > 23 || m > 59 || sec > 59 {
        return Err(bad());
    }
    Ok((h, m, sec))
}

fn weekday(d: &DayArg) -> Result<(u32, &'static str), String> {
    let bad =
        || format!("expected a day of the week (\"sun\" … \"sat\", or 0 = sunday … 6), got {d}");
    match d {
        DayArg::Number(n) if (0..=7).contains(n) => {
            let n = (*n % 7) as usize;
            Ok((n as u32, DAYS[n]))
        }
        DayArg::Number(_) => Err(bad()),
        DayArg::Name(s) => {
            let s = s.to_ascii_lowercase();
            DAYS.iter()
                .position(|d| *d == s)
                .or_else(|| DAY_NAMES.iter().position(|d| *d == s))
                .map(|i| (i as u32, DAYS[i]))
                .ok_or_else(bad)
        }
    }
}

fn month(m: &DayArg) -> Result<u32, String> {
    let bad = || format!("expected a month (1 … 12 or \"jan\" … \"dec\"), got {m}");
    match m {
        DayArg::Number(n) if (1..=12).contains(n) => Ok(*n as u32),
        DayArg::Number(_) => Err(bad()),
        DayArg::Name(s) => {
            let s = s.to_ascii_lowercase();
            MONTHS
                .iter()
                .position(|x| *x == s)
                .or_else(|| MONTH_NAMES.iter().position(|x| *x == s))
                .map(|i| i as u32 + 1)
                .ok_or_else(bad)
        }
    }
}

/// A day of the month, 1 … 31 or `"last"`; with a month, checked against its length.
fn day_of_month(d: &DayArg, in_month: Option<u32>) -> Result<String, String> {
    match d {
        DayArg::Name(s) if s.eq_ignore_ascii_case("last") => Ok("L".into()),
        DayArg::Number(n) if (1..=31).contains(n) => {
            if let Some(m) = in_month {
                let max = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m as usize - 1];
                if *n > max {
                    return Err(format!("{} has no day {n}", MONTH_NAMES[m as usize - 1]));
                }
            }
            Ok(n.to_string())
        }
        _ => Err(format!(
            "expected a day of the month (1 … 31, or \"last\"), got {d}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn nexts(s: &Schedule, from: &str, n: usize) -> Vec<String> {
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

    fn table() -> Table {
        Table::default()
    }

    #[test]
    fn table_forms() {
        let mut t = table();
        t.daily = vec!["02:00".into(), "14:30:15".into()];
        t.weekly = vec![Weekly {
            day: vec![DayArg::Name("sun".into())],
            at: "03:00".into(),
        }];
        t.listed = vec!["daily"];
        let s = Schedule::table(&t).unwrap();
        assert_eq!(
            s.describe(),
            "daily 02:00; daily 14:30:15; weekly sun 03:00"
        );
        assert_eq!(
            nexts(&s, "2026-03-06T12:00:00Z", 5), // a Friday
            [
                "2026-03-06T14:30:15+00:00",
                "2026-03-07T02:00:00+00:00",
                "2026-03-07T14:30:15+00:00",
                "2026-03-08T02:00:00+00:00",
                "2026-03-08T03:00:00+00:00",
            ]
        );

        let mut t = table();
        t.monthly = vec![Monthly {
            day: vec![DayArg::Number(1), DayArg::Name("last".into())],
            at: "04:00".into(),
        }];
        let s = Schedule::table(&t).unwrap();
        assert_eq!(
            nexts(&s, "2026-02-01T05:00:00Z", 3),
            [
                "2026-02-28T04:00:00+00:00",
                "2026-03-01T04:00:00+00:00",
                "2026-03-31T04:00:00+00:00"
            ]
        );

        let mut t = table();
        t.yearly = vec![Yearly {
            month: DayArg::Name("Feb".into()),
            day: DayArg::Number(29),
            at: "05:00".into(),
        }];
        let s = Schedule::table(&t).unwrap();
        assert_eq!(
            nexts(&s, "2026-01-01T00:00:00Z", 2),
            ["2028-02-29T05:00:00+00:00", "2032-02-29T05:00:00+00:00"],
            "only leap years have 29 February"
        );

        let mut t = table();
        t.weekly = vec![Weekly {
            day: vec![DayArg::Name("monday".into()), DayArg::Number(5)],
            at: "22:15".into(),
        }];
        let s = Schedule::table(&t).unwrap();
        assert_eq!(s.entries[0].cron(), "0 15 22 * * 1,5");
        assert_eq!(s.describe(), "weekly mon,fri 22:15");
    }

    #[test]
    fn table_errors_name_the_field() {
        let mut t = table();
        t.daily = vec!["25:00".into()];
        assert_eq!(
            Schedule::table(&t).unwrap_err(),
            (
                "daily".to_string(),
                "expected a time of day \"HH:MM\" or \"HH:MM:SS\" (UTC), got \"25:00\"".to_string()
            )
        );
        let mut t = table();
        t.weekly = vec![
            Weekly {
                day: vec![DayArg::Name("sun".into())],
                at: "03:00".into(),
            },
            Weekly {
                day: vec![DayArg::Name("sunday-ish".into())],
                at: "03:00".into(),
            },
        ];
        t.listed = vec!["weekly"];
        let (field, msg) = Schedule::table(&t).unwrap_err();
        assert_eq!(field, "weekly[2].day");
        assert!(msg.starts_with("expected a day of the week"), "{msg}");
        let mut t = table();
        t.yearly = vec![Yearly {
            month: DayArg::Number(4),
            day: DayArg::Number(31),
            at: "00:00".into(),
        }];
        assert_eq!(
            Schedule::table(&t).unwrap_err(),
            ("yearly.day".to_string(), "april has no day 31".to_string())
        );
        assert_eq!(Schedule::table(&table()).unwrap_err().0, "");
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
