//! Idle Lua contexts, reused FIFO. Limits follow KumoMTA's defaults:
//! contexts older than 300 s or used 1024 times are retired, at most
//! 8192 are kept spare.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mlua::Lua;
use parking_lot::Mutex;

const MAX_AGE: Duration = Duration::from_secs(300);
const MAX_USES: u32 = 1024;
const MAX_SPARE: usize = 8192;

#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<VecDeque<(Lua, Instant, u32)>>,
}

impl Pool {
    pub fn take(&self) -> Option<(Lua, Instant, u32)> {
        let mut g = self.idle.lock();
        while let Some((lua, created, uses)) = g.pop_front() {
            if created.elapsed() < MAX_AGE {
                return Some((lua, created, uses));
            }
        }
        None
    }

    pub fn put(&self, lua: Lua, created: Instant, uses: u32) {
        if uses >= MAX_USES || created.elapsed() >= MAX_AGE {
            return;
        }
        let mut g = self.idle.lock();
        if g.len() < MAX_SPARE {
            g.push_back((lua, created, uses));
        }
    }

    pub fn len(&self) -> usize {
        self.idle.lock().len()
    }
}
