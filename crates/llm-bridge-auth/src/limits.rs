//! Rate limits and budgets of one managed key, exact under concurrency: one lock per key,
//! checked and updated together.
//!
//! Requests per minute and tokens per minute are sliding windows of the last 60 seconds.
//! A request reserves an estimate of its tokens when it is admitted and settles with the
//! real count when it ends; a request is admitted while the window is below the limit, so
//! concurrent requests overshoot by at most one request's worth.
//!
//! The counters here are one process's. With several instances, a [`SharedLimits`]
//! backend (Redis) counts for all of them; its admissions settle through the same
//! [`Ledger`] shape, so the rest of the gateway cannot tell the two apart.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use llm_bridge_core::{Error, ErrorKind};

use crate::clock::{Clock, day_of, month_of, ms_to_next_day, ms_to_next_month};
use crate::managed::ManagedKey;
use crate::policy::{Budget, KeyPolicy};

/// Where an admitted request's spending is settled: this process's counters, or a service
/// shared by every instance.
pub trait Ledger: Send + Sync {
    /// Reserves up to `extra` more tokens for request `ticket` within `budget`; returns how
    /// many were granted.
    fn extend(&self, ticket: u64, budget: &Budget<u64>, extra: u64, now: i64) -> u64;
    /// Records what request `ticket` used, releasing its `reserved` tokens and its place.
    fn settle(&self, ticket: u64, reserved: u64, tokens: u64, cost: f64, now: i64);
    /// Ends request `ticket` without a count: releases its reservation and its place.
    fn release(&self, ticket: u64, reserved: u64);
}

/// The shared limits service could not be asked (why, without secrets).
#[derive(Debug, Clone)]
pub struct LimitsUnavailable(pub String);

/// What a [`SharedLimits::admit`] returns.
pub type SharedAdmission<'a> = Pin<
    Box<dyn Future<Output = Result<Result<Admission, Rejection>, LimitsUnavailable>> + Send + 'a>,
>;

/// Limits counted in a service shared by every instance, so that N instances allow what
/// one would.
pub trait SharedLimits: Send + Sync {
    /// Checks and counts a request of `key` expecting `estimate` tokens, in one round trip.
    /// `Err` when the service cannot be reached.
    fn admit<'a>(&'a self, key: &'a ManagedKey, estimate: u64) -> SharedAdmission<'a>;
}

const WINDOW_MS: i64 = 60_000;

/// The `x-ratelimit-*` figures after an admission (or a refusal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateInfo {
    /// Requests per minute allowed.
    pub limit_requests: Option<u64>,
    /// Requests left in the current window.
    pub remaining_requests: Option<u64>,
    /// Tokens per minute allowed.
    pub limit_tokens: Option<u64>,
    /// Tokens left in the current window.
    pub remaining_tokens: Option<u64>,
}

impl RateInfo {
    /// Whether the key has any rate limit.
    pub fn is_limited(&self) -> bool {
        self.limit_requests.is_some() || self.limit_tokens.is_some()
    }
}

/// A refused request: the error, and the rate figures for the response headers.
#[derive(Debug)]
pub struct Rejection {
    /// 401, 403 or 429.
    pub error: Box<Error>,
    /// Rate figures, when the key has rate limits.
    pub rate: Option<RateInfo>,
}

impl From<Error> for Rejection {
    fn from(error: Error) -> Self {
        Rejection {
            error: Box::new(error),
            rate: None,
        }
    }
}

#[derive(Debug)]
struct TokenEntry {
    at: i64,
    tokens: u64,
    id: u64,
}

#[derive(Debug, Default)]
struct Spend {
    day: i64,
    month: i64,
    day_tokens: u64,
    month_tokens: u64,
    total_tokens: u64,
    day_cost: f64,
    month_cost: f64,
    total_cost: f64,
    /// Estimates of requests admitted and not yet settled.
    reserved: u64,
}

impl Spend {
    fn roll(&mut self, now: i64) {
        let (day, month) = (day_of(now), month_of(now));
        if day != self.day {
            self.day = day;
            self.day_tokens = 0;
            self.day_cost = 0.0;
        }
        if month != self.month {
            self.month = month;
            self.month_tokens = 0;
            self.month_cost = 0.0;
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    /// When each request of the window was admitted: kept only while the key has a
    /// requests-per-minute limit (it is that limit's window; without one it would only be
    /// memory, eight bytes for every request of the last minute).
    requests: VecDeque<i64>,
    /// The window's requests and their tokens, in admission order (so by `id`): kept only
    /// while the key has a tokens-per-minute limit.
    tokens: VecDeque<TokenEntry>,
    tokens_in_window: u64,
    next_id: u64,
    /// Requests admitted and not yet ended.
    in_flight: u64,
    spend: Spend,
}

impl Counters {
    fn prune(&mut self, now: i64) {
        while self.requests.front().is_some_and(|t| *t <= now - WINDOW_MS) {
            self.requests.pop_front();
        }
        while let Some(e) = self.tokens.front() {
            if e.at > now - WINDOW_MS {
                break;
            }
            self.tokens_in_window -= e.tokens;
            self.tokens.pop_front();
        }
        // A burst leaves its windows' capacity behind for good: give back what a quiet
        // minute no longer needs (with room to spare, so a steady rate does not realloc).
        shrink_after_burst(&mut self.requests);
        shrink_after_burst(&mut self.tokens);
    }

    /// The window's entry of request `id`, if it is still in the window.
    fn token_entry(&mut self, id: u64) -> Option<&mut TokenEntry> {
        let i = self.tokens.binary_search_by_key(&id, |e| e.id).ok()?;
        self.tokens.get_mut(i)
    }
}

/// Entries a window keeps room for however quiet it gets.
const WINDOW_MIN_CAPACITY: usize = 64;

fn shrink_after_burst<T>(window: &mut VecDeque<T>) {
    let room = window.capacity();
    if room > WINDOW_MIN_CAPACITY && window.len() < room / 4 {
        window.shrink_to((window.len() * 2).max(WINDOW_MIN_CAPACITY));
    }
}

/// The live counters of one managed key (kept across reloads of its policy).
#[derive(Debug, Default)]
pub struct KeyState {
    counters: Mutex<Counters>,
}

impl KeyState {
    fn lock(&self) -> MutexGuard<'_, Counters> {
        // A panic while holding the lock leaves counts that are still usable.
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds spending that happened before this process started (from the usage records).
    pub fn seed(&self, now: i64, day: (u64, f64), month: (u64, f64), total: (u64, f64)) {
        let mut c = self.lock();
        c.spend.roll(now);
        c.spend.day_tokens += day.0;
        c.spend.day_cost += day.1;
        c.spend.month_tokens += month.0;
        c.spend.month_cost += month.1;
        c.spend.total_tokens += total.0;
        c.spend.total_cost += total.1;
    }

    /// Checks the limits and budgets and, if they allow it, admits a request that expects to
    /// use `estimate` tokens. Against token budgets it reserves that estimate, or what is left
    /// of the budget when that is less; [`Admission::extend`] asks for more as it is spent.
    pub fn admit(
        self: &Arc<Self>,
        policy: &KeyPolicy,
        clock: &Arc<dyn Clock>,
        estimate: u64,
    ) -> Result<Admission, Rejection> {
        let now = clock.now_ms();
        let mut guard = self.lock();
        let c = &mut *guard;
        c.prune(now);
        c.spend.roll(now);
        let rate = |c: &Counters| RateInfo {
            limit_requests: policy.rpm,
            remaining_requests: policy
                .rpm
                .map(|r| r.saturating_sub(c.requests.len() as u64)),
            limit_tokens: policy.tpm,
            remaining_tokens: policy.tpm.map(|t| t.saturating_sub(c.tokens_in_window)),
        };
        if let Some(refusal) = budget_refusal(policy, &c.spend) {
            return Err(Rejection {
                error: Box::new(refusal.error(now)),
                rate: Some(rate(c)).filter(RateInfo::is_limited),
            });
        }
        if let Some(max) = policy.max_concurrent {
            if c.in_flight >= max {
                return Err(Rejection {
                    error: Box::new(Refusal::Concurrency(max).error(now)),
                    rate: Some(rate(c)).filter(RateInfo::is_limited),
                });
            }
        }
        if let Some(rpm) = policy.rpm {
            if c.requests.len() as u64 >= rpm {
                let wait = c.requests.front().map_or(0, |t| t + WINDOW_MS - now);
                return Err(Rejection {
                    error: Box::new(Refusal::Requests(rpm, wait).error(now)),
                    rate: Some(rate(c)),
                });
            }
        }
        if let Some(tpm) = policy.tpm {
            if c.tokens_in_window >= tpm {
                // Wait until enough of the window has aged out to fall below the limit.
                let mut left = c.tokens_in_window;
                let mut wait = WINDOW_MS;
                for e in &c.tokens {
                    left -= e.tokens;
                    if left < tpm {
                        wait = e.at + WINDOW_MS - now;
                        break;
                    }
                }
                return Err(Rejection {
                    error: Box::new(Refusal::Tokens(tpm, wait).error(now)),
                    rate: Some(rate(c)),
                });
            }
        }
        if policy.rpm.is_some() {
            c.requests.push_back(now);
        } else if !c.requests.is_empty() {
            // The limit was lifted (a reload): its window goes with it.
            c.requests = VecDeque::new();
        }
        c.in_flight += 1;
        let id = c.next_id;
        c.next_id += 1;
        if policy.tpm.is_some() {
            c.tokens.push_back(TokenEntry {
                at: now,
                tokens: estimate,
                id,
            });
            c.tokens_in_window += estimate;
        } else if !c.tokens.is_empty() {
            c.tokens = VecDeque::new();
            c.tokens_in_window = 0;
        }
        let budget = policy.budget_tokens;
        let reserved = estimate.min(room(&budget, &c.spend));
        c.spend.reserved += reserved;
        let info = rate(c);
        drop(guard);
        let ledger: Arc<dyn Ledger> = self.clone();
        Ok(Admission::new(
            ledger,
            clock.clone(),
            id,
            reserved,
            budget,
            info,
        ))
    }

    /// Reserves up to `extra` more tokens for a running request, as far as the token budgets
    /// allow; returns how many were granted.
    fn reserve_more(&self, budget: &Budget<u64>, extra: u64, now: i64) -> u64 {
        let mut guard = self.lock();
        let c = &mut *guard;
        c.spend.roll(now);
        let granted = extra.min(room(budget, &c.spend));
        c.spend.reserved += granted;
        granted
    }

    /// What the key has spent so far: `(day, month, total)` tokens.
    pub fn spent_tokens(&self, now: i64) -> (u64, u64, u64) {
        let mut c = self.lock();
        c.spend.roll(now);
        (
            c.spend.day_tokens,
            c.spend.month_tokens,
            c.spend.total_tokens,
        )
    }

    fn count(&self, id: u64, estimate: u64, tokens: u64, cost: f64, now: i64) {
        let mut guard = self.lock();
        let c = &mut *guard;
        c.in_flight = c.in_flight.saturating_sub(1);
        c.spend.reserved = c.spend.reserved.saturating_sub(estimate);
        if let Some(e) = c.token_entry(id) {
            let old = e.tokens;
            e.tokens = tokens;
            c.tokens_in_window = (c.tokens_in_window - old).saturating_add(tokens);
        }
        c.spend.roll(now);
        // An upstream may report any count: saturate rather than overflow.
        c.spend.day_tokens = c.spend.day_tokens.saturating_add(tokens);
        c.spend.month_tokens = c.spend.month_tokens.saturating_add(tokens);
        c.spend.total_tokens = c.spend.total_tokens.saturating_add(tokens);
        c.spend.day_cost += cost;
        c.spend.month_cost += cost;
        c.spend.total_cost += cost;
    }
}

impl Ledger for KeyState {
    fn extend(&self, _ticket: u64, budget: &Budget<u64>, extra: u64, now: i64) -> u64 {
        self.reserve_more(budget, extra, now)
    }

    fn settle(&self, ticket: u64, reserved: u64, tokens: u64, cost: f64, now: i64) {
        self.count(ticket, reserved, tokens, cost, now);
    }

    fn release(&self, ticket: u64, reserved: u64) {
        let mut guard = self.lock();
        let c = &mut *guard;
        c.in_flight = c.in_flight.saturating_sub(1);
        c.spend.reserved = c.spend.reserved.saturating_sub(reserved);
        if let Some(e) = c.token_entry(ticket) {
            let tokens = std::mem::take(&mut e.tokens);
            c.tokens_in_window -= tokens;
        }
    }
}

/// Tokens left in the tightest token budget, after what is spent and reserved
/// (`u64::MAX` without token budgets).
fn room(budget: &Budget<u64>, s: &Spend) -> u64 {
    [
        (budget.day, s.day_tokens),
        (budget.month, s.month_tokens),
        (budget.total, s.total_tokens),
    ]
    .into_iter()
    .filter_map(|(b, spent)| Some(b?.saturating_sub(spent + s.reserved)))
    .min()
    .unwrap_or(u64::MAX)
}

/// Why a backend refuses a request; one wording whichever backend decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refusal {
    /// `max_concurrent` requests are in flight.
    Concurrency(u64),
    /// The requests-per-minute limit, and the ms until a request leaves the window.
    Requests(u64, i64),
    /// The tokens-per-minute limit, and the ms until enough tokens leave the window.
    Tokens(u64, i64),
    /// A token (`cost: false`) or cost budget of this period is spent.
    Budget {
        /// A cost budget, not a token budget.
        cost: bool,
        /// Which one.
        period: Period,
    },
}

/// The period of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// The UTC day.
    Day,
    /// The UTC month.
    Month,
    /// The key's whole life.
    Total,
}

impl Refusal {
    /// The error the client gets (429 for limits, 429 `insufficient_quota` for budgets),
    /// with a `Retry-After` where waiting helps.
    pub fn error(self, now: i64) -> Error {
        match self {
            Refusal::Concurrency(max) => limited(
                format!("concurrency limit reached: {max} requests in flight"),
                1000,
            ),
            Refusal::Requests(rpm, wait) => limited(
                format!("rate limit reached: {rpm} requests per minute"),
                wait,
            ),
            Refusal::Tokens(tpm, wait) => {
                limited(format!("rate limit reached: {tpm} tokens per minute"), wait)
            }
            Refusal::Budget { cost, period } => {
                let what = if cost { "cost" } else { "token" };
                let (name, wait) = match period {
                    Period::Total => ("total", None),
                    Period::Month => ("monthly", Some(ms_to_next_month(now))),
                    Period::Day => ("daily", Some(ms_to_next_day(now))),
                };
                let mut e = Error::new(
                    ErrorKind::QuotaExceeded,
                    format!("the key's {name} {what} budget is spent"),
                );
                if let Some(ms) = wait {
                    e = e.with_retry_after(Duration::from_millis(
                        u64::try_from(ms.max(1)).unwrap_or(1),
                    ));
                }
                e
            }
        }
    }
}

fn limited(message: String, wait_ms: i64) -> Error {
    let ms = u64::try_from(wait_ms.max(1)).unwrap_or(1);
    Error::new(ErrorKind::RateLimited, message).with_retry_after(Duration::from_millis(ms))
}

fn budget_refusal(policy: &KeyPolicy, s: &Spend) -> Option<Refusal> {
    let used = |spent: u64| spent + s.reserved;
    let t = &policy.budget_tokens;
    let c = &policy.budget_cost;
    let over = |cost: bool, period: Period| Some(Refusal::Budget { cost, period });
    if t.total.is_some_and(|b| used(s.total_tokens) >= b) {
        return over(false, Period::Total);
    }
    if c.total.is_some_and(|b| s.total_cost >= b) {
        return over(true, Period::Total);
    }
    if t.month.is_some_and(|b| used(s.month_tokens) >= b) {
        return over(false, Period::Month);
    }
    if c.month.is_some_and(|b| s.month_cost >= b) {
        return over(true, Period::Month);
    }
    if t.day.is_some_and(|b| used(s.day_tokens) >= b) {
        return over(false, Period::Day);
    }
    if c.day.is_some_and(|b| s.day_cost >= b) {
        return over(true, Period::Day);
    }
    None
}

/// An admitted request. Settle it with the real usage when it ends; dropped unsettled, it
/// releases its reservation and counts nothing.
#[derive(Default)]
pub struct Admission {
    ledger: Option<(Arc<dyn Ledger>, Arc<dyn Clock>)>,
    id: u64,
    /// Tokens reserved against the key's budgets.
    estimate: u64,
    budget: Budget<u64>,
    rate: RateInfo,
}

impl Admission {
    /// An admission with nothing to count (unlimited keys).
    pub fn unlimited() -> Self {
        Admission::default()
    }

    /// An admission settled through `ledger`: request `ticket`, with `reserved` tokens held
    /// against `budget`.
    pub fn new(
        ledger: Arc<dyn Ledger>,
        clock: Arc<dyn Clock>,
        ticket: u64,
        reserved: u64,
        budget: Budget<u64>,
        rate: RateInfo,
    ) -> Self {
        Admission {
            ledger: Some((ledger, clock)),
            id: ticket,
            estimate: reserved,
            budget,
            rate,
        }
    }

    /// The rate figures at admission.
    pub fn rate(&self) -> RateInfo {
        self.rate
    }

    /// Whether the key has a token budget, so that a running stream must keep within
    /// [`Admission::reserved`] (extending it as it goes).
    pub fn has_token_budget(&self) -> bool {
        self.ledger.is_some() && !self.budget.is_unlimited()
    }

    /// Tokens reserved for this request.
    pub fn reserved(&self) -> u64 {
        self.estimate
    }

    /// Reserves up to `extra` more tokens, as far as the budgets allow; returns how many were
    /// granted (0: the budget is used up, the request must stop).
    pub fn extend(&mut self, extra: u64) -> u64 {
        let Some((ledger, clock)) = &self.ledger else {
            return extra;
        };
        let granted = ledger.extend(self.id, &self.budget, extra, clock.now_ms());
        self.estimate += granted;
        granted
    }

    /// Records what the request really used.
    pub fn settle(mut self, tokens: u64, cost: f64) {
        if let Some((ledger, clock)) = self.ledger.take() {
            ledger.settle(self.id, self.estimate, tokens, cost, clock.now_ms());
        }
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("id", &self.id)
            .field("estimate", &self.estimate)
            .field("rate", &self.rate)
            .finish()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some((ledger, _)) = self.ledger.take() {
            ledger.release(self.id, self.estimate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const NOON: i64 = 1_764_590_400_000;

    fn admit_many(state: &Arc<KeyState>, policy: &KeyPolicy, clock: &Arc<dyn Clock>, n: u64) {
        for _ in 0..n {
            let admission = state.admit(policy, clock, 10).expect("admitted");
            admission.settle(12, 0.0);
        }
    }

    fn capacities(state: &KeyState) -> (usize, usize) {
        let c = state.lock();
        (c.requests.capacity(), c.tokens.capacity())
    }

    #[test]
    fn a_key_without_rate_limits_keeps_no_window() {
        let state = Arc::new(KeyState::default());
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::at(NOON));
        admit_many(&state, &KeyPolicy::default(), &clock, 10_000);
        assert_eq!(capacities(&state), (0, 0));
    }

    #[test]
    fn a_burst_gives_its_window_back_once_it_has_passed() {
        let state = Arc::new(KeyState::default());
        let manual = ManualClock::at(NOON);
        let clock: Arc<dyn Clock> = Arc::new(manual.clone());
        let policy = KeyPolicy {
            rpm: Some(1_000_000),
            tpm: Some(1_000_000_000),
            ..KeyPolicy::default()
        };
        admit_many(&state, &policy, &clock, 10_000);
        let (requests, tokens) = capacities(&state);
        assert!(
            requests >= 10_000 && tokens >= 10_000,
            "{requests} {tokens}"
        );
        {
            let c = state.lock();
            // Each settled with its real count: 12 tokens, not the estimate of 10.
            assert_eq!(c.tokens_in_window, 120_000);
        }
        manual.advance_ms(WINDOW_MS + 1);
        admit_many(&state, &policy, &clock, 1);
        assert_eq!(
            capacities(&state),
            (WINDOW_MIN_CAPACITY, WINDOW_MIN_CAPACITY)
        );
        assert_eq!(state.lock().tokens_in_window, 12);
    }

    #[test]
    fn lifting_a_limit_drops_its_window() {
        let state = Arc::new(KeyState::default());
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::at(NOON));
        let limited = KeyPolicy {
            rpm: Some(100),
            tpm: Some(1_000),
            ..KeyPolicy::default()
        };
        admit_many(&state, &limited, &clock, 50);
        admit_many(&state, &KeyPolicy::default(), &clock, 1);
        let c = state.lock();
        assert!(c.requests.is_empty() && c.tokens.is_empty());
        assert_eq!(c.tokens_in_window, 0);
    }
}
