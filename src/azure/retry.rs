//! Retry policy: jittered exponential backoff that honours `Retry-After`.

use std::time::{Duration, SystemTime};

/// When and how often a failed request is tried again. Only [`super::AzureError::is_retryable`] errors are
/// retried (5xx, 408, 429, connection failures); other 4xx never are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Delay before the first retry, doubled per retry.
    pub base_delay: Duration,
    /// Largest backoff delay.
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited for: the error is returned so the caller can requeue.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        RetryPolicy { max_attempts: 1, ..Self::default() }
    }

    /// The delay before retry number `retry` (0 = first retry), given the service's `Retry-After` and a
    /// jitter sample in `[0, 1)`. Backoff is "equal jitter": half of `min(max, base * 2^retry)` fixed, half
    /// random. With `Retry-After` the service's delay is used plus up to one base delay of jitter.
    /// `None` means: do not retry (attempts exhausted or `Retry-After` beyond `max_retry_after`).
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, jitter: f64) -> Option<Duration> {
        if retry.saturating_add(1) >= self.max_attempts {
            return None;
        }
        let jitter = jitter.clamp(0.0, 1.0);
        if let Some(after) = retry_after {
            if after > self.max_retry_after {
                return None;
            }
            return Some(after + self.base_delay.mul_f64(jitter));
        }
        let exp = self.base_delay.saturating_mul(2u32.saturating_pow(retry.min(20))).min(self.max_delay);
        Some(exp / 2 + (exp / 2).mul_f64(jitter))
    }
}

/// Parses `Retry-After`: delay seconds (`"120"`, fractions tolerated) or an HTTP date (`"Wed, 21 Oct 2015
/// 07:28:00 GMT"`, measured from `now`; a date in the past means no wait).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_stops() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        assert_eq!(p.delay(0, None, 0.0), Some(Duration::from_millis(50)));
        assert_eq!(p.delay(0, None, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(p.delay(2, None, 0.0), Some(Duration::from_millis(200)));
        assert_eq!(p.delay(8, None, 1.0), Some(Duration::from_secs(1)));
        assert_eq!(p.delay(9, None, 0.5), None);
        for retry in 0..9 {
            let d = p.delay(retry, None, 0.7).expect("retries left");
            assert!(d <= Duration::from_secs(1));
        }
        assert_eq!(RetryPolicy::none().delay(0, None, 0.0), None);
    }

    #[test]
    fn retry_after_is_honoured_within_limit() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(0, Some(Duration::from_secs(3)), 0.0), Some(Duration::from_secs(3)));
        let d = p.delay(0, Some(Duration::from_secs(3)), 0.5).expect("retry");
        assert!(d > Duration::from_secs(3) && d <= Duration::from_secs(3) + p.base_delay);
        assert_eq!(p.delay(0, Some(Duration::from_secs(600)), 0.0), None);
    }

    #[test]
    fn parses_retry_after_forms() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").expect("date");
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 1.5 ", now), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }
}
