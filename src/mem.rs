//! Memory budgets: every allocation whose size a user's number decides is checked against the
//! memory this machine has available *before* it is made, so a huge size is a typed error naming
//! the value and the bytes it would need, not an abort in the allocator.
//!
//! The budget is `AEM_MEMORY_LIMIT` (bytes; suffixes K, M, G, T in powers of 1024) when set, else
//! `MemAvailable` from `/proc/meminfo`, else unlimited (other systems: the allocator decides).

use std::fmt;

/// Bytes the process may plan to allocate.
pub fn available() -> u128 {
    if let Some(v) = std::env::var_os("AEM_MEMORY_LIMIT") {
        if let Some(b) = v.to_str().and_then(parse_bytes) {
            return b;
        }
    }
    mem_available().unwrap_or(u128::MAX)
}

fn mem_available() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `123`, `64K`, `8G`, `1.5T` → bytes.
fn parse_bytes(s: &str) -> Option<u128> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u128 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        'T' | 't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let x: f64 = num.trim().parse().ok()?;
    (x.is_finite() && x >= 0.0).then_some((x * mult as f64) as u128)
}

/// A planned allocation that does not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge {
    /// What would be allocated, naming the user's value (`model.layers = 1000000`).
    pub what: String,
    /// Bytes it needs.
    pub needs: u128,
    /// Bytes available.
    pub available: u128,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} needs {} of memory, {} available (AEM_MEMORY_LIMIT sets the budget)",
            self.what,
            Bytes(self.needs),
            Bytes(self.available)
        )
    }
}

impl std::error::Error for TooLarge {}

/// Checks that `needs` bytes (`None`: the size overflowed) fit the budget.
pub fn check(what: impl FnOnce() -> String, needs: Option<u128>) -> Result<(), TooLarge> {
    let avail = available();
    match needs {
        Some(n) if n <= avail => Ok(()),
        _ => Err(TooLarge {
            what: what(),
            needs: needs.unwrap_or(u128::MAX),
            available: avail,
        }),
    }
}

/// `vec![value; n]` through a fallible reservation: an allocation the system refuses (after the
/// budget check passed, e.g. under memory pressure from other processes) is a [`TooLarge`]
/// naming `what`, not an abort.
pub fn try_vec<T: Clone>(what: &str, n: usize, value: T) -> Result<Vec<T>, TooLarge> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| TooLarge {
        what: what.to_string(),
        needs: (n as u128).saturating_mul(std::mem::size_of::<T>() as u128),
        available: available(),
    })?;
    v.resize(n, value);
    Ok(v)
}

/// `a · b · …` in u128, `None` on overflow.
pub fn product(factors: &[usize]) -> Option<u128> {
    factors
        .iter()
        .try_fold(1u128, |acc, &f| acc.checked_mul(f as u128))
}

/// A byte count for people: `8.0 GiB`.
pub struct Bytes(pub u128);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == u128::MAX {
            return write!(f, "more than 2^128 bytes");
        }
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        let mut x = self.0 as f64;
        let mut u = 0;
        while x >= 1024.0 && u + 1 < units.len() {
            x /= 1024.0;
            u += 1;
        }
        if u == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{x:.1} {}", units[u])
        }
    }
}
