//! Reminder schedules: when a reminder fires next.
//!
//! Three forms, parsed once when the reminder is made and stored as written:
//! - `in 10m`, `in 2h`: once, that long from now;
//! - `every 30s|10m|2h|1d`: repeatedly, counted from the last firing;
//! - `at 07:30`: every day at that local time;
//! - five cron fields `m h dom mon dow` (`*`, `*/n`, `a-b`, `a-b/n`, lists; dow 0–7, 0 and 7
//!   are Sunday; when both dom and dow are restricted either may match, as in cron).
//!
//! Times are Unix seconds; calendar forms are evaluated in the local time zone by stepping
//! through real instants, so a daylight-saving change never makes a schedule loop or jump back.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::memory::Store;

/// A parsed schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Once, `secs` after it was made.
    In(u64),
    /// Every `secs`.
    Every(u64),
    /// Calendar fields (from `at HH:MM` or cron).
    Cron(Box<Cron>),
}

/// Five cron fields as sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    minute: Vec<bool>,
    hour: Vec<bool>,
    dom: Vec<bool>,
    month: Vec<bool>,
    dow: Vec<bool>,
    dom_star: bool,
    dow_star: bool,
}

/// Which clock calendar schedules follow.
#[derive(Clone, Copy, Debug)]
pub enum Zone {
    /// The machine's local time (what a person means by "at 07:30").
    Local,
    /// UTC (tests).
    #[allow(dead_code)]
    Utc,
}

/// Broken-down time: (minute, hour, day of month, month 1–12, day of week 0–6 Sunday = 0).
fn fields(t: i64, zone: Zone) -> (usize, usize, usize, usize, usize) {
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let tt = t as libc::time_t;
    unsafe {
        match zone {
            Zone::Local => libc::localtime_r(&tt, &mut tm),
            Zone::Utc => libc::gmtime_r(&tt, &mut tm),
        };
    }
    (
        tm.tm_min as usize,
        tm.tm_hour as usize,
        tm.tm_mday as usize,
        tm.tm_mon as usize + 1,
        tm.tm_wday as usize,
    )
}

fn duration(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .with_context(|| format!("{s:?}: expected a number and a unit, like 10m"))?;
    let mult = match unit.trim() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86400,
        u => bail!("{s:?}: unknown unit {u:?} (use s, m, h or d)"),
    };
    if n == 0 {
        bail!("{s:?}: must be longer than zero");
    }
    Ok(n * mult)
}

fn field(spec: &str, lo: usize, hi: usize, name: &str) -> Result<Vec<bool>> {
    let mut set = vec![false; hi + 1];
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<usize>()
                    .ok()
                    .filter(|&s| s > 0)
                    .with_context(|| format!("bad step in {name} field {part:?}"))?,
            ),
            None => (part, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (num(a, name)?, num(b, name)?)
        } else {
            let a = num(range, name)?;
            (a, if step > 1 { hi } else { a })
        };
        if a < lo || b > hi || a > b {
            bail!("{name} field {part:?} is outside {lo}-{hi}");
        }
        for v in (a..=b).step_by(step) {
            set[v] = true;
        }
    }
    Ok(set)
}

fn num(s: &str, name: &str) -> Result<usize> {
    s.parse()
        .with_context(|| format!("{name} field: {s:?} is not a number"))
}

impl Schedule {
    /// Parses `in 10m`, `every 10m`, `at HH:MM` or five cron fields.
    pub fn parse(s: &str) -> Result<Schedule> {
        let s = s.trim();
        let lower = s.to_ascii_lowercase();
        if let Some(d) = lower.strip_prefix("in ") {
            return Ok(Schedule::In(duration(d)?));
        }
        if let Some(d) = lower.strip_prefix("every ") {
            return Ok(Schedule::Every(duration(d)?));
        }
        if let Some(t) = lower.strip_prefix("at ") {
            let (h, m) = t
                .trim()
                .split_once(':')
                .with_context(|| format!("{s:?}: expected at HH:MM"))?;
            let (h, m): (usize, usize) = (
                h.parse().with_context(|| format!("{s:?}: bad hour"))?,
                m.parse().with_context(|| format!("{s:?}: bad minute"))?,
            );
            if h > 23 || m > 59 {
                bail!("{s:?}: no such time of day");
            }
            return Schedule::parse(&format!("{m} {h} * * *"));
        }
        let f: Vec<&str> = s.split_whitespace().collect();
        if f.len() != 5 {
            bail!(
                "{s:?} is not a schedule: use \"in 10m\", \"every 10m\", \"at 07:30\" or five cron fields (\"30 7 * * 1-5\")"
            );
        }
        let mut dow = field(f[4], 0, 7, "day-of-week")?;
        if dow[7] {
            dow[0] = true;
        }
        Ok(Schedule::Cron(Box::new(Cron {
            minute: field(f[0], 0, 59, "minute")?,
            hour: field(f[1], 0, 23, "hour")?,
            dom: field(f[2], 1, 31, "day-of-month")?,
            month: field(f[3], 1, 12, "month")?,
            dow,
            dom_star: f[2] == "*",
            dow_star: f[4] == "*",
        })))
    }

    /// Whether it fires more than once.
    pub fn repeats(&self) -> bool {
        !matches!(self, Schedule::In(_))
    }

    /// The first firing strictly after `t` (for `in`, `t` is when it was made).
    pub fn next_after(&self, t: i64, zone: Zone) -> Option<i64> {
        match self {
            Schedule::In(d) | Schedule::Every(d) => Some(t + *d as i64),
            Schedule::Cron(c) => {
                // The next whole minute, then hour jumps while the day or hour cannot match,
                // minute steps within a matching hour. At most about four years of hours.
                let mut x = (t.div_euclid(60) + 1) * 60;
                for _ in 0..(4 * 366 * 24 * 2) {
                    let (mi, h, dom, mon, dow) = fields(x, zone);
                    let day_ok = c.month[mon]
                        && match (c.dom_star, c.dow_star) {
                            (true, true) => true,
                            (false, true) => c.dom[dom],
                            (true, false) => c.dow[dow],
                            (false, false) => c.dom[dom] || c.dow[dow],
                        };
                    if !day_ok || !c.hour[h] {
                        x += (60 - mi as i64) * 60;
                        continue;
                    }
                    match (mi..60).find(|&m| c.minute[m]) {
                        Some(m) => return Some(x + (m - mi) as i64 * 60),
                        None => x += (60 - mi as i64) * 60,
                    }
                }
                None
            }
        }
    }
}

/// A reminder that fired.
#[derive(Clone, Debug)]
pub struct Fired {
    /// Its id.
    pub id: i64,
    /// What to remind of.
    pub text: String,
    /// Its schedule.
    pub schedule: String,
    /// When it was due (local time).
    pub due: String,
    /// Whether it fired late (it fell due while the agent was not running).
    pub late: bool,
}

/// Fires the reminders due at `now`: records each firing and its next time in the database
/// (and a `reminder` message in `conversation`), then returns them for the channel to show.
/// A repeating reminder missed while the agent was down fires once, marked late.
pub fn fire_due(store: &Store, now: i64, conversation: i64) -> Result<Vec<Fired>> {
    let mut out = Vec::new();
    for r in store.due_reminders(now)? {
        let due = r.next_fire.unwrap_or(now);
        let next = match Schedule::parse(&r.schedule) {
            Ok(s) if !s.repeats() => None,
            Ok(Schedule::Every(d)) => {
                let d = d as i64;
                // Counted from the due time, skipping whatever passed while the agent was down.
                Some(due + d + (now - due).max(0) / d * d)
            }
            Ok(s) => s.next_after(now, Zone::Local),
            Err(e) => {
                tracing::warn!("reminder #{}: {e:#}; disabled", r.id);
                None
            }
        };
        store.reminder_fired(r.id, now, next)?;
        if conversation > 0 {
            store.add_message(conversation, "reminder", &r.text, None)?;
        }
        out.push(Fired {
            id: r.id,
            text: r.text,
            schedule: r.schedule,
            due: super::local_time(due),
            late: now - due > 90,
        });
    }
    Ok(out)
}

/// The running agent's reminder clock: a thread with its own connection to the database that
/// checks every second and hands fired reminders to the channel. Stops when dropped.
pub struct Ticker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Starts the clock on the database at `db`.
    pub fn spawn(
        db: &Path,
        conversation: i64,
        mut deliver: Box<dyn FnMut(Fired) + Send>,
    ) -> Result<Ticker> {
        let store = Store::open(db)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("reminders".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    match fire_due(&store, super::memory::now(), conversation) {
                        Ok(v) => v.into_iter().for_each(&mut deliver),
                        Err(e) => tracing::warn!("reminders: {e:#}"),
                    }
                    for _ in 0..10 {
                        if stop2.load(Ordering::Relaxed) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })?;
        Ok(Ticker {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-01-05 00:00:00 UTC, a Monday.
    const MON: i64 = 1_767_571_200;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(Schedule::parse("every 10m").unwrap(), Schedule::Every(600));
        assert_eq!(Schedule::parse("in 2h").unwrap(), Schedule::In(7200));
        assert_eq!(Schedule::parse("EVERY 1d").unwrap(), Schedule::Every(86400));
        assert!(Schedule::parse("at 07:30").is_ok());
        assert!(Schedule::parse("*/15 9-17 * * 1-5").is_ok());
        for bad in [
            "every 0m",
            "every ten",
            "at 25:00",
            "at 7",
            "* * * *",
            "61 * * * *",
            "* * * 13 *",
            "*/0 * * * *",
            "soon",
            "every 5 parsecs",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(!Schedule::parse("in 1m").unwrap().repeats());
        assert!(Schedule::parse("every 1m").unwrap().repeats());
    }

    #[test]
    fn next_firings() {
        let z = Zone::Utc;
        let at = Schedule::parse("at 07:30").unwrap();
        assert_eq!(at.next_after(MON, z), Some(MON + 7 * 3600 + 1800));
        // At the firing minute itself: the next day.
        let t = MON + 7 * 3600 + 1800;
        assert_eq!(at.next_after(t, z), Some(t + 86400));
        // Weekdays at 09:00 from Saturday 10:00 (MON + 5 days): Monday 09:00.
        let wd = Schedule::parse("0 9 * * 1-5").unwrap();
        let sat = MON + 5 * 86400 + 10 * 3600;
        assert_eq!(wd.next_after(sat, z), Some(MON + 7 * 86400 + 9 * 3600));
        // Sunday as 7.
        let sun = Schedule::parse("0 0 * * 7").unwrap();
        assert_eq!(sun.next_after(MON, z), Some(MON + 6 * 86400));
        // Every quarter hour.
        let q = Schedule::parse("*/15 * * * *").unwrap();
        assert_eq!(q.next_after(MON + 61, z), Some(MON + 900));
        // 1st of the month or Mondays: both restricted means either.
        let either = Schedule::parse("0 12 1 * 1").unwrap();
        assert_eq!(either.next_after(MON, z), Some(MON + 12 * 3600));
        // February 30th never comes.
        assert_eq!(
            Schedule::parse("0 0 30 2 *").unwrap().next_after(MON, z),
            None
        );
        assert_eq!(
            Schedule::parse("every 10m").unwrap().next_after(MON, z),
            Some(MON + 600)
        );
    }

    #[test]
    fn due_reminders_fire_once_and_reschedule_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.sqlite");
        let t = 1_000_000;
        {
            let s = Store::open(&db).unwrap();
            s.add_reminder("every 10m", "stretch", t).unwrap();
            s.add_reminder("in 5m", "tea", t + 100).unwrap();
        }
        // The agent was down for an hour: "every 10m" fires once, late, then keeps its phase.
        let s = Store::open(&db).unwrap();
        let f = fire_due(&s, t + 3600 + 5, 0).unwrap();
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|f| f.late));
        let left = s.reminders().unwrap();
        assert_eq!(left.len(), 1, "the one-shot is done");
        assert_eq!(left[0].next_fire, Some(t + 4200));
        assert!(fire_due(&s, t + 3600 + 6, 0).unwrap().is_empty());
    }
}
