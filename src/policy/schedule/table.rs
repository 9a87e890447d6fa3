//! The table form of a schedule — `{daily = "02:00", weekly = {day = "sun",
//! at = "03:00"}, …}` — as read from Lua (unknown keys refused), and its
//! translation into cron expressions, with errors naming the field.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{parse_cron, Entry, Schedule};

impl Schedule {
    /// A schedule from the table form (see [`Table`]).
    pub fn table(t: &Table) -> Result<Schedule, (String, String)> {
        let mut entries = Vec::new();
        for (i, at) in t.daily.items.iter().enumerate() {
            let field = t.daily.field("daily", i);
            let (h, m, s) = time_of_day(at).map_err(|e| (field.clone(), e))?;
            entries.push(built(
                format!("{s} {m} {h} * * *"),
                format!("daily {at}"),
                &field,
            )?);
        }
        for (i, w) in t.weekly.items.iter().enumerate() {
            let field = t.weekly.field("weekly", i);
            let (h, m, s) = time_at(&field, &w.at)?;
            let days = each_day(&field, &w.day, weekday)?;
            let nums: Vec<String> = days.iter().map(|(n, _)| n.to_string()).collect();
            let names: Vec<&str> = days.iter().map(|(_, n)| *n).collect();
            entries.push(built(
                format!("{s} {m} {h} * * {}", nums.join(",")),
                format!("weekly {} {}", names.join(","), w.at),
                &field,
            )?);
        }
        for (i, mo) in t.monthly.items.iter().enumerate() {
            let field = t.monthly.field("monthly", i);
            let (h, m, s) = time_at(&field, &mo.at)?;
            let days = each_day(&field, &mo.day, |d| day_of_month(d, None))?.join(",");
            entries.push(built(
                format!("{s} {m} {h} {days} * *"),
                format!("monthly {days} {}", mo.at),
                &field,
            )?);
        }
        for (i, y) in t.yearly.items.iter().enumerate() {
            let field = t.yearly.field("yearly", i);
            let (h, m, s) = time_at(&field, &y.at)?;
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
}

fn built(expr: String, text: String, field: &str) -> Result<Entry, (String, String)> {
    parse_cron(&expr, text).map_err(|e| (field.to_string(), e))
}

/// The `at` of the run at `field`.
fn time_at(field: &str, at: &str) -> Result<(u32, u32, u32), (String, String)> {
    time_of_day(at).map_err(|e| (format!("{field}.at"), e))
}

/// The days of the weekly or monthly run at `field`, each read by `read`; at least one.
fn each_day<T>(
    field: &str,
    days: &[DayArg],
    read: impl Fn(&DayArg) -> Result<T, String>,
) -> Result<Vec<T>, (String, String)> {
    let field = format!("{field}.day");
    let days = days
        .iter()
        .map(|d| read(d).map_err(|e| (field.clone(), e)))
        .collect::<Result<Vec<T>, _>>()?;
    if days.is_empty() {
        return Err((field, "name at least one day".into()));
    }
    Ok(days)
}

/// The `schedule` option as written: a cron expression or a table of runs.
#[derive(Debug, Clone)]
pub enum ScheduleSpec {
    Cron(String),
    Table(Table),
}

impl<'de> Deserialize<'de> for ScheduleSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ScheduleSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a cron expression or a table {daily = …, weekly = …, monthly = …, yearly = …}",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ScheduleSpec, E> {
                Ok(ScheduleSpec::Cron(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<ScheduleSpec, A::Error> {
                Ok(ScheduleSpec::Table(Table::deserialize(
                    de::value::MapAccessDeserializer::new(m),
                )?))
            }
        }
        d.deserialize_any(V)
    }
}

/// The table form of a schedule, as read from Lua:
/// `{daily = "02:00", weekly = {day = "sun", at = "03:00"}, monthly = {day = 1, at = "04:00"},
/// yearly = {month = "jan", day = 1, at = "05:00"}}`; each may also be a list of such runs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    #[serde(default)]
    pub daily: OneOrMany<String>,
    #[serde(default)]
    pub weekly: OneOrMany<Weekly>,
    #[serde(default)]
    pub monthly: OneOrMany<Monthly>,
    #[serde(default)]
    pub yearly: OneOrMany<Yearly>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weekly {
    #[serde(deserialize_with = "one_or_many")]
    pub day: Vec<DayArg>,
    pub at: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monthly {
    #[serde(deserialize_with = "one_or_many")]
    pub day: Vec<DayArg>,
    pub at: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Yearly {
    pub month: DayArg,
    pub day: DayArg,
    pub at: String,
}

/// One value or a list of them (`daily = "02:00"` or `daily = {"02:00", "14:00"}`).
#[derive(Debug, Clone)]
pub struct OneOrMany<T> {
    pub items: Vec<T>,
    /// Given as a list: messages then name the item (`daily[2]`).
    pub listed: bool,
}

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany {
            items: Vec::new(),
            listed: false,
        }
    }
}

impl<T> OneOrMany<T> {
    pub fn one(item: T) -> Self {
        OneOrMany {
            items: vec![item],
            listed: false,
        }
    }

    pub fn list(items: Vec<T>) -> Self {
        OneOrMany {
            items,
            listed: true,
        }
    }

    /// The field name of item `i` of the runs of `kind`.
    fn field(&self, kind: &str, i: usize) -> String {
        if self.listed {
            format!("{kind}[{}]", i + 1)
        } else {
            kind.to_string()
        }
    }
}

fn one_or_many<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    OneOrMany::deserialize(d).map(|o| o.items)
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(v) = seq.next_element()? {
                    items.push(v);
                }
                Ok(OneOrMany::list(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(m)).map(OneOrMany::one)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                T::deserialize(de::value::StrDeserializer::new(s)).map(OneOrMany::one)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                T::deserialize(de::value::I64Deserializer::new(n)).map(OneOrMany::one)
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
                T::deserialize(de::value::F64Deserializer::new(n)).map(OneOrMany::one)
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
                T::deserialize(de::value::BoolDeserializer::new(b)).map(OneOrMany::one)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A day or month given as a number or a name.
#[derive(Debug, Clone, PartialEq)]
pub enum DayArg {
    Number(i64),
    Name(String),
}

impl<'de> Deserialize<'de> for DayArg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DayArg;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a name")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<DayArg, E> {
                Ok(DayArg::Number(n))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<DayArg, E> {
                Ok(DayArg::Number(n.min(i64::MAX as u64) as i64))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<DayArg, E> {
                if n.fract() == 0.0 && n.abs() < 1e15 {
                    Ok(DayArg::Number(n as i64))
                } else {
                    Err(E::custom(format!("expected a whole number, got {n}")))
                }
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<DayArg, E> {
                Ok(DayArg::Name(s.to_string()))
            }
        }
        d.deserialize_any(V)
    }
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
    use super::super::tests::nexts;
    use super::*;

    fn table() -> Table {
        Table::default()
    }

    #[test]
    fn table_forms() {
        let mut t = table();
        t.daily = OneOrMany::list(vec!["02:00".into(), "14:30:15".into()]);
        t.weekly = OneOrMany::one(Weekly {
            day: vec![DayArg::Name("sun".into())],
            at: "03:00".into(),
        });
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
        t.monthly = OneOrMany::one(Monthly {
            day: vec![DayArg::Number(1), DayArg::Name("last".into())],
            at: "04:00".into(),
        });
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
        t.yearly = OneOrMany::one(Yearly {
            month: DayArg::Name("Feb".into()),
            day: DayArg::Number(29),
            at: "05:00".into(),
        });
        let s = Schedule::table(&t).unwrap();
        assert_eq!(
            nexts(&s, "2026-01-01T00:00:00Z", 2),
            ["2028-02-29T05:00:00+00:00", "2032-02-29T05:00:00+00:00"],
            "only leap years have 29 February"
        );

        let mut t = table();
        t.weekly = OneOrMany::one(Weekly {
            day: vec![DayArg::Name("monday".into()), DayArg::Number(5)],
            at: "22:15".into(),
        });
        let s = Schedule::table(&t).unwrap();
        assert_eq!(s.entries[0].cron(), "0 15 22 * * 1,5");
        assert_eq!(s.describe(), "weekly mon,fri 22:15");
    }

    #[test]
    fn table_errors_name_the_field() {
        let mut t = table();
        t.daily = OneOrMany::one("25:00".into());
        assert_eq!(
            Schedule::table(&t).unwrap_err(),
            (
                "daily".to_string(),
                "expected a time of day \"HH:MM\" or \"HH:MM:SS\" (UTC), got \"25:00\"".to_string()
            )
        );
        let mut t = table();
        t.weekly = OneOrMany::list(vec![
            Weekly {
                day: vec![DayArg::Name("sun".into())],
                at: "03:00".into(),
            },
            Weekly {
                day: vec![DayArg::Name("sunday-ish".into())],
                at: "03:00".into(),
            },
        ]);
        let (field, msg) = Schedule::table(&t).unwrap_err();
        assert_eq!(field, "weekly[2].day");
        assert!(msg.starts_with("expected a day of the week"), "{msg}");
        let mut t = table();
        t.yearly = OneOrMany::one(Yearly {
            month: DayArg::Number(4),
            day: DayArg::Number(31),
            at: "00:00".into(),
        });
        assert_eq!(
            Schedule::table(&t).unwrap_err(),
            ("yearly.day".to_string(), "april has no day 31".to_string())
        );
        assert_eq!(Schedule::table(&table()).unwrap_err().0, "");
    }
}
