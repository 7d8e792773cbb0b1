//! The order in which one new connection tries a pool's backends: the
//! balancer's pick, then the rest in its fallback order (every backend in
//! service, in turn, when the pool fails open).

use super::Backend;
use crate::balance::Fallback;

/// Iterator over a pool's backends in the order one connection should try them.
#[derive(Debug)]
pub struct Candidates<'a> {
    pub(super) backends: &'a [Backend],
    pub(super) fallback: Fallback<'a>,
    pub(super) first: Option<usize>,
    /// Ring: backends looked at after the first. Table: slots looked at.
    pub(super) step: usize,
    /// Backends yielded after the first (table order only; empty otherwise).
    pub(super) tried: Vec<usize>,
    /// Failing open: offer down backends too.
    pub(super) ignore_health: bool,
}

impl<'a> Iterator for Candidates<'a> {
    type Item = &'a Backend;

    fn next(&mut self) -> Option<&'a Backend> {
        let first = self.first?;
        let n = self.backends.len();
        match self.fallback {
            Fallback::Ring => {
                while self.step < n {
                    let i = (first + self.step) % n;
                    self.step += 1;
                    let b = &self.backends[i];
                    if self.step == 1 || (self.ignore_health && b.in_service()) || b.is_up() {
                        return self.backends.get(i);
                    }
                }
                None
            }
            Fallback::Table { table, start } => {
                if self.step == 0 {
                    self.step = 1;
                    return self.backends.get(first);
                }
                // Stop once every up backend was offered, rather than scanning the
                // rest of the table (this runs only when a connect failed).
                let up = self.backends.iter().filter(|b| b.is_up()).count();
                while self.step <= table.len() && self.tried.len() + 1 < up {
                    let i = table[(start + self.step) % table.len()] as usize;
                    self.step += 1;
                    if i != first
                        && !self.tried.contains(&i)
                        && self.backends.get(i).is_some_and(Backend::is_up)
                    {
                        self.tried.push(i);
                        return self.backends.get(i);
                    }
                }
                None
            }
        }
    }
}
