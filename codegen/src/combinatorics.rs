//! Small exact integer helpers for counting monomials.

/// `C(n, k)`, or `None` once the running value exceeds `cap`.
///
/// The running value after step `i` is `C(n - k + i, i)`, which never decreases with `i`, so
/// stopping at the first value above `cap` is exact: the final result would be above it too.
/// With `cap <= 2^64` and `n <= 2^32`, `value * (n - k + i)` stays far inside `u128`.
pub(crate) fn binomial_capped(n: usize, k: usize, cap: u128) -> Option<u128> {
    if k > n {
        return Some(0);
    }
    let mut value: u128 = 1;
    for i in 1..=k as u128 {
        value = value * (n as u128 - k as u128 + i) / i;
        if value > cap {
            return None;
        }
    }
    Some(value)
}

/// `n!` as `f64`, exact for `n <= 22` (the terms limit keeps us at `n <= 20`).
pub(crate) fn factorial(n: usize) -> f64 {
    (1..=n).map(|i| i as f64).product()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomials() {
        assert_eq!(binomial_capped(5, 2, u128::MAX), Some(10));
        assert_eq!(binomial_capped(19, 3, u128::MAX), Some(969));
        assert_eq!(binomial_capped(3, 5, u128::MAX), Some(0));
        assert_eq!(binomial_capped(10, 0, u128::MAX), Some(1));
        assert_eq!(binomial_capped(69, 5, 1000), None);
        assert_eq!(binomial_capped(69, 5, u128::MAX), Some(11_238_513));
    }

    #[test]
    fn factorials() {
        assert_eq!(factorial(0), 1.0);
        assert_eq!(factorial(5), 120.0);
        assert_eq!(factorial(20), 2_432_902_008_176_640_000.0);
    }
}
