//! Optional Azure-style throttling (`--throttle-per-minute`): each endpoint serves at most so many requests a
//! minute and answers the rest 429 with `Retry-After`, as Azure does when a per-minute quota is used up. Off by
//! default; it lets clients (the operator's among them) be tested against a service that pushes back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorKind, Flavor};

/// A token bucket holding a minute's quota, refilled continuously at `per_minute` tokens a minute.
#[derive(Debug)]
pub struct Throttle {
    per_second: f64,
    capacity: f64,
    state: Mutex<(f64, Instant)>,
}

impl Throttle {
    /// A bucket allowing `per_minute` requests a minute (at least 1).
    pub fn new(per_minute: u32) -> Self {
        let capacity = f64::from(per_minute.max(1));
        Throttle { per_second: capacity / 60.0, capacity, state: Mutex::new((capacity, Instant::now())) }
    }

    /// Takes a token, or says how long until the next one.
    pub fn try_take(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, last) = *state;
        let tokens = (tokens + now.saturating_duration_since(last).as_secs_f64() * self.per_second).min(self.capacity);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            Ok(())
        } else {
            *state = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_second))
        }
    }
}

/// Middleware state: the bucket and the error shape of the endpoint.
#[derive(Clone, Debug)]
pub struct ThrottleLayerState {
    /// The endpoint's bucket.
    pub throttle: Arc<Throttle>,
    /// DPS or hub error shape.
    pub flavor: Flavor,
}

/// Answers 429 with `Retry-After` (whole seconds, at least 1) when the endpoint's bucket is empty.
pub async fn enforce(State(state): State<ThrottleLayerState>, request: Request, next: Next) -> Response {
    match state.throttle.try_take(Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            tracing::debug!(path = %request.uri().path(), "throttled: answered 429");
            let error = ApiError::new(ErrorKind::Throttled, "the request rate exceeds the endpoint's quota");
            let error = if state.flavor == Flavor::Hub { error.hub() } else { error };
            let mut response = error.into_response();
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response.headers_mut().insert("retry-after", HeaderValue::from(seconds.max(1)));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_minutes_quota_then_refills_with_time() {
        let throttle = Throttle::new(60);
        let start = Instant::now();
        for _ in 0..60 {
            assert!(throttle.try_take(start).is_ok());
        }
        let wait = throttle.try_take(start).expect_err("the minute's quota is used up");
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO);
        assert!(throttle.try_take(start + Duration::from_millis(1001)).is_ok());
    }
}
