//! Send limits in fixed windows, counted in the database so every replica shares them.
//! Used for SMS (per number, per country calling code) and email (per address); callable
//! from anything else that sends, such as the Okta telephony hook.

use crate::store::Tx;
use time::OffsetDateTime;

use crate::clock::to_millis;
use crate::config::{EmailLimits, SmsLimits};
use crate::error::{Error, Result};
use crate::store;

const TEN_MINUTES_MS: i64 = 10 * 60 * 1000;
const DAY_MS: i64 = 24 * 3600 * 1000;

/// One limit: at most `max` events named `name` per `window_ms` (0 means no limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// The counter, e.g. `sms:number:+14155550123`.
    pub name: String,
    /// Window length in milliseconds; windows are aligned to the Unix epoch.
    pub window_ms: i64,
    /// Events allowed per window.
    pub max: u32,
    /// What is limited, for the problem's detail, e.g. "messages to this number per 10 minutes".
    pub what: &'static str,
}

/// The SMS limits for a number: per number and per country calling code, per 10 minutes and
/// per day.
pub fn sms(limits: &SmsLimits, e164: &str, calling_code: u16) -> Vec<Limit> {
    vec![
        Limit {
            name: format!("sms:number:{e164}"),
            window_ms: TEN_MINUTES_MS,
            max: limits.per_number_10min,
            what: "messages to this number per 10 minutes",
        },
        Limit {
            name: format!("sms:number:{e164}"),
            window_ms: DAY_MS,
            max: limits.per_number_day,
            what: "messages to this number per day",
        },
        Limit {
            name: format!("sms:country:+{calling_code}"),
            window_ms: TEN_MINUTES_MS,
            max: limits.per_country_10min,
            what: "messages to this country code per 10 minutes",
        },
        Limit {
            name: format!("sms:country:+{calling_code}"),
            window_ms: DAY_MS,
            max: limits.per_country_day,
            what: "messages to this country code per day",
        },
    ]
}

/// The email limits for an address.
pub fn email(limits: &EmailLimits, address: &str) -> Vec<Limit> {
    let name = format!("email:address:{}", address.to_lowercase());
    vec![
        Limit {
            name: name.clone(),
            window_ms: TEN_MINUTES_MS,
            max: limits.per_address_10min,
            what: "messages to this address per 10 minutes",
        },
        Limit { name, window_ms: DAY_MS, max: limits.per_address_day, what: "messages to this address per day" },
    ]
}

/// Counts one event against every limit, within the caller's transaction. When any limit is
/// exceeded the answer is `rate_limited` with the longest wait, and the caller must roll back
/// (drop the transaction without committing), so a refused event is not counted.
pub async fn check_and_count(conn: &mut Tx, now: OffsetDateTime, limits: &[Limit]) -> Result<()> {
    let now_ms = to_millis(now);
    let mut exceeded: Option<(i64, &Limit)> = None;
    for limit in limits.iter().filter(|l| l.max > 0 && l.window_ms > 0) {
        let start = now_ms - now_ms.rem_euclid(limit.window_ms);
        let end = start + limit.window_ms;
        let name = format!("{}:{}", limit.name, limit.window_ms / 1000);
        let count = store::limits::increment(conn, &name, start, end).await?;
        if count > i64::from(limit.max) && exceeded.is_none_or(|(wait, _)| end - now_ms > wait) {
            exceeded = Some((end - now_ms, limit));
        }
    }
    match exceeded {
        None => Ok(()),
        Some((wait_ms, limit)) => Err(Error::RateLimited {
            retry_after: u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1),
            detail: format!("at most {} {}", limit.max, limit.what),
        }),
    }
}
