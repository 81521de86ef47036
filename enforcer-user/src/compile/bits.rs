//! A fixed-size bitset over port cells (one bit per (protocol, port interval) combination).

/// Bits `0..len`; bits past `len` in the last word are always zero.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Bits {
    pub fn zeros(len: usize) -> Bits {
        Bits {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }

    pub fn ones(len: usize) -> Bits {
        let mut b = Bits {
            words: vec![u64::MAX; len.div_ceil(64)],
            len,
        };
        b.trim();
        b
    }

    fn trim(&mut self) {
        let rem = self.len % 64;
        if rem != 0
            && let Some(last) = self.words.last_mut()
        {
            *last &= (1u64 << rem) - 1;
        }
    }

    pub fn set(&mut self, i: usize) {
        if let Some(w) = self.words.get_mut(i / 64) {
            *w |= 1u64 << (i % 64);
        }
    }

    pub fn clear(&mut self, i: usize) {
        if let Some(w) = self.words.get_mut(i / 64) {
            *w &= !(1u64 << (i % 64));
        }
    }

    #[cfg(test)]
    pub fn get(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    pub fn is_zero(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    pub fn is_ones(&self) -> bool {
        *self == Bits::ones(self.len)
    }

    /// `self = other` (same length), without allocating.
    pub fn copy_from(&mut self, other: &Bits) {
        self.words.copy_from_slice(&other.words);
    }

    /// `self &= other`.
    pub fn and_with(&mut self, other: &Bits) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= *b;
        }
    }

    /// `self &= !other`.
    pub fn and_not(&mut self, other: &Bits) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= !*b;
        }
    }

    /// Indices of the set bits, ascending.
    pub fn ones_iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let t = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + t)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_operations() {
        let mut a = Bits::ones(70);
        assert_eq!(a.ones_iter().count(), 70);
        assert!(a.is_ones());
        a.clear(3);
        a.clear(69);
        assert!(!a.get(3) && a.get(4) && !a.get(69) && !a.get(70));
        let mut b = Bits::zeros(70);
        b.set(4);
        b.set(65);
        let mut c = a.clone();
        c.and_with(&b);
        assert_eq!(c.ones_iter().collect::<Vec<_>>(), vec![4, 65]);
        a.and_not(&b);
        assert_eq!(a.ones_iter().count(), 66);
        assert!(Bits::zeros(0).is_zero() && Bits::ones(0).is_ones());
    }
}
