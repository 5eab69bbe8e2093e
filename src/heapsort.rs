//! An in-place sort in a few hundred bytes of wasm. Each element type the standard
//! library's sorts are used with costs the module about 3 KB (quicksort, its small-sort
//! networks, the driver); the filter sorts only short lists, and mostly at load.

/// Sort `v` by `less` in place (not stable). Heapsort: O(n log n) at worst.
pub fn sort_by<T>(v: &mut [T], less: impl Fn(&T, &T) -> bool) {
    let before = |v: &[T], a: usize, b: usize| match (v.get(a), v.get(b)) {
        (Some(x), Some(y)) => less(x, y),
        _ => false,
    };
    // Restore the max-heap below `root` within `v[..end]`.
    let sift_down = |v: &mut [T], mut root: usize, end: usize| loop {
        let mut child = 2 * root + 1;
        if child >= end {
            break;
        }
        if child + 1 < end && before(v, child, child + 1) {
            child += 1;
        }
        if !before(v, root, child) {
            break;
        }
        v.swap(root, child);
        root = child;
    };
    let len = v.len();
    for root in (0..len / 2).rev() {
        sift_down(v, root, len);
    }
    for end in (1..len).rev() {
        v.swap(0, end);
        sift_down(v, 0, end);
    }
}

/// Sort `v` in ascending order in place (not stable).
pub fn sort<T: Ord>(v: &mut [T]) {
    sort_by(v, |a, b| a < b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_like_the_standard_library() {
        let mut seed: u64 = 7;
        for len in 0..70 {
            let mut v: Vec<u64> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    seed >> 60
                })
                .collect();
            let mut want = v.clone();
            want.sort();
            sort(&mut v);
            assert_eq!(v, want);
        }
    }

    #[test]
    fn sorts_by_the_order_given() {
        let mut v = vec![(2, 'a'), (1, 'b'), (3, 'c'), (1, 'a')];
        sort_by(&mut v, |a, b| a.1 > b.1 || (a.1 == b.1 && a.0 < b.0));
        assert_eq!(v, [(3, 'c'), (1, 'b'), (1, 'a'), (2, 'a')]);
    }
}
