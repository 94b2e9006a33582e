//! FogLake: a partially observed FrozenLake.
//!
//! An n×n grid (n = 2..=7) of floor and holes with a start and a goal. Each turn the agent
//! sees `goal r{dr:+} c{dc:+} view v1..v9`: the goal relative to itself (row offset `dr` =
//! goal row − agent row, so `r+2` is two rows south) and the 3×3 window around it, row by row
//! from the north-west (`#` outside the grid, `.` floor, `O` hole, `G` goal, `@` the agent).
//! On levels with [`GoalView::WhenSeen`] the offset reads `r? c?` until the goal has been
//! inside the window once. A response carries 1–3 moves `n | s | e | w` (north = row − 1),
//! e.g. `n ; e ; e end`, run in order until a hole (`hole`, reward 0) or the goal (`win`,
//! reward 1). A move off the grid leaves the agent in place (`wall`); others give `ok`.
//!
//! Instances: holes i.i.d. with probability `hole_p`, start and goal on floor with Manhattan
//! distance in `[min_dist, max_dist]` and a path between them of at most `3 * max_turns` moves
//! (so the full-map oracle solves every task).
//!
//! Vocabulary (ids): 0–10 shared (see [`super::vocab::SHARED`]), 11 `view`, 12 `#`, 13 `.`,
//! 14 `O`, 15 `G`, 16 `@`, 17 `n`, 18 `s`, 19 `e`, 20 `w`, 21 `wall`, 22 `hole`, 23 `r?`,
//! 24 `c?`, 25..=37 `r-6`..`r+6`, 38..=50 `c-6`..`c+6`.

use std::collections::VecDeque;
use std::sync::OnceLock;

use rand::Rng;

use super::grammar::Grammar;
use super::vocab::{TokenId, TokenMask, Vocab, GOAL, NO, OK, SHARED};
use super::{Env, EnvError, Outcome, Split};

/// The FogLake token table.
pub const TOKENS: [&str; 51] = [
    SHARED[0], SHARED[1], SHARED[2], SHARED[3], SHARED[4], SHARED[5], SHARED[6], SHARED[7],
    SHARED[8], SHARED[9], SHARED[10], "view", "#", ".", "O", "G", "@", "n", "s", "e", "w", "wall",
    "hole", "r?", "c?", "r-6", "r-5", "r-4", "r-3", "r-2", "r-1", "r+0", "r+1", "r+2", "r+3",
    "r+4", "r+5", "r+6", "c-6", "c-5", "c-4", "c-3", "c-2", "c-1", "c+0", "c+1", "c+2", "c+3",
    "c+4", "c+5", "c+6",
];
/// The FogLake vocabulary.
pub static VOCAB: Vocab = Vocab::new("foglake", &TOKENS);

/// `view`
pub const VIEW: TokenId = 11;
/// Outside the grid.
pub const OUT: TokenId = 12;
/// Floor.
pub const FLOOR: TokenId = 13;
/// Hole.
pub const HOLE_CELL: TokenId = 14;
/// Goal cell.
pub const GOAL_CELL: TokenId = 15;
/// The agent.
pub const AGENT: TokenId = 16;
/// Move north (row − 1).
pub const N: TokenId = 17;
/// Move south (row + 1).
pub const S: TokenId = 18;
/// Move east (column + 1).
pub const E: TokenId = 19;
/// Move west (column − 1).
pub const W: TokenId = 20;
/// Feedback: the move would leave the grid; the agent stays.
pub const WALL: TokenId = 21;
/// Feedback: fell into a hole (episode over, reward 0).
pub const HOLE: TokenId = 22;
/// Row offset unknown (goal not yet seen).
pub const R_UNKNOWN: TokenId = 23;
/// Column offset unknown.
pub const C_UNKNOWN: TokenId = 24;
/// `r-6`; `r{d:+}` is `R_MINUS6 + 6 + d`.
pub const R_MINUS6: TokenId = 25;
/// `c-6`; `c{d:+}` is `C_MINUS6 + 6 + d`.
pub const C_MINUS6: TokenId = 38;

/// Largest grid side (offsets must fit `r-6..r+6`).
pub const MAX_SIZE: usize = 7;

/// The response grammar: `d (; d){0,2} end` with `d` in `n s e w`.
pub fn grammar() -> &'static Grammar {
    static G: OnceLock<Grammar> = OnceLock::new();
    G.get_or_init(|| Grammar::new(vec![vec![TokenMask::of(&[N, S, E, W])]], 3))
}

/// When the goal offset is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GoalView {
    /// From the first turn (the prototype).
    Always,
    /// Only once the goal has been inside the 3×3 window (`r? c?` before).
    WhenSeen,
}

/// Level parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Grid side n (2..=7).
    pub size: usize,
    /// Probability that a cell other than start and goal is a hole.
    pub hole_p: f64,
    /// Smallest Manhattan start–goal distance.
    pub min_dist: usize,
    /// Largest Manhattan start–goal distance.
    pub max_dist: usize,
    /// Turn limit.
    pub max_turns: usize,
    /// When the goal offset is shown.
    pub goal_view: GoalView,
}

impl Params {
    /// The configuration that learned in the prototype: 5×5, p = 0.2, distance 3–4, 5 turns.
    pub fn proto() -> Self {
        Self {
            size: 5,
            hole_p: 0.2,
            min_dist: 3,
            max_dist: 4,
            max_turns: 5,
            goal_view: GoalView::Always,
        }
    }

    /// The hard (OOD) level: 7×7, distance 4–6, 6 turns, goal hidden until seen (tuned to 1–3%).
    pub fn hard() -> Self {
        Self {
            size: 7,
            hole_p: 0.2,
            min_dist: 4,
            max_dist: 6,
            max_turns: 6,
            goal_view: GoalView::WhenSeen,
        }
    }
}

/// One map.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Task {
    /// Grid side.
    pub size: usize,
    /// Row-major, `true` = hole; `size * size` cells.
    pub holes: Vec<bool>,
    /// Start (row, column).
    pub start: (usize, usize),
    /// Goal (row, column).
    pub goal: (usize, usize),
    /// Turn limit.
    pub max_turns: usize,
    /// When the goal offset is shown.
    pub goal_view: GoalView,
}

impl Task {
    /// Canonical text, e.g. `foglake n5 t5 always start 0 1 goal 3 2 map .O... ...`.
    pub fn canonical(&self) -> String {
        let view = match self.goal_view {
            GoalView::Always => "always",
            GoalView::WhenSeen => "whenseen",
        };
        let mut s = format!(
            "foglake n{} t{} {view} start {} {} goal {} {} map",
            self.size, self.max_turns, self.start.0, self.start.1, self.goal.0, self.goal.1
        );
        for r in 0..self.size {
            s.push(' ');
            for c in 0..self.size {
                s.push(if self.hole(r, c) { 'O' } else { '.' });
            }
        }
        s
    }

    /// Always [`Split::Train`] here; the split is by hash, see [`super::Task::split`].
    pub fn split(&self) -> Split {
        Split::Train
    }

    fn hole(&self, r: usize, c: usize) -> bool {
        self.holes.get(r * self.size + c).copied().unwrap_or(false)
    }

    /// A shortest path of moves from start to goal (full map), if any.
    pub fn shortest_path(&self) -> Option<Vec<TokenId>> {
        let n = self.size;
        let inside = |(r, c): (usize, usize)| r < n && c < n;
        if !inside(self.start) || !inside(self.goal) || self.holes.len() < n * n {
            return None;
        }
        let idx = |(r, c): (usize, usize)| r * n + c;
        let mut prev: Vec<Option<(usize, TokenId)>> = vec![None; n * n];
        let mut seen = vec![false; n * n];
        let mut q = VecDeque::new();
        seen[idx(self.start)] = true;
        q.push_back(self.start);
        while let Some(p) = q.pop_front() {
            if p == self.goal {
                let mut path = Vec::new();
                let mut cur = idx(p);
                while let Some((from, mv)) = prev[cur] {
                    path.push(mv);
                    cur = from;
                }
                path.reverse();
                return Some(path);
            }
            for mv in [N, S, E, W] {
                if let Some(q2) = step_pos(n, p, mv) {
                    if !self.hole(q2.0, q2.1) && !seen[idx(q2)] {
                        seen[idx(q2)] = true;
                        prev[idx(q2)] = Some((idx(p), mv));
                        q.push_back(q2);
                    }
                }
            }
        }
        None
    }

    /// Whether the full-map oracle (shortest path, 3 moves per turn) solves the task.
    pub fn oracle_solves(&self) -> bool {
        self.shortest_path()
            .is_some_and(|p| p.len() <= 3 * self.max_turns)
    }
}

fn step_pos(n: usize, (r, c): (usize, usize), mv: TokenId) -> Option<(usize, usize)> {
    match mv {
        N if r > 0 => Some((r - 1, c)),
        S if r + 1 < n => Some((r + 1, c)),
        E if c + 1 < n => Some((r, c + 1)),
        W if c > 0 => Some((r, c - 1)),
        _ => None,
    }
}

/// Draws one instance.
pub fn generate<R: Rng + ?Sized>(p: &Params, rng: &mut R) -> Result<Task, EnvError> {
    let bad = |why: &str| EnvError::BadParams {
        env: "foglake",
        why: why.to_string(),
    };
    if !(2..=MAX_SIZE).contains(&p.size) {
        return Err(bad("size must be in 2..=7"));
    }
    if !(0.0..1.0).contains(&p.hole_p) {
        return Err(bad("hole_p must be in [0, 1)"));
    }
    if p.min_dist == 0 || p.min_dist > p.max_dist || p.max_turns == 0 {
        return Err(bad("need 1 <= min_dist <= max_dist and max_turns >= 1"));
    }
    let n = p.size;
    const TRIES: usize = 1000;
    for _ in 0..TRIES {
        let holes: Vec<bool> = (0..n * n).map(|_| rng.random_bool(p.hole_p)).collect();
        let floor: Vec<(usize, usize)> = (0..n * n)
            .filter(|&i| !holes[i])
            .map(|i| (i / n, i % n))
            .collect();
        if floor.is_empty() {
            continue;
        }
        let start = floor[rng.random_range(0..floor.len())];
        let goals: Vec<(usize, usize)> = floor
            .iter()
            .copied()
            .filter(|g| {
                let d = g.0.abs_diff(start.0) + g.1.abs_diff(start.1);
                (p.min_dist..=p.max_dist).contains(&d)
            })
            .collect();
        if goals.is_empty() {
            continue;
        }
        let goal = goals[rng.random_range(0..goals.len())];
        let task = Task {
            size: n,
            holes,
            start,
            goal,
            max_turns: p.max_turns,
            goal_view: p.goal_view,
        };
        if task.oracle_solves() {
            return Ok(task);
        }
    }
    Err(EnvError::NoTask {
        env: "foglake",
        split: Split::Train,
        tries: TRIES,
    })
}

/// A FogLake episode state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FogLake {
    task: Task,
    pos: (usize, usize),
    /// The goal has been inside the 3×3 window.
    seen: bool,
}

impl FogLake {
    /// The initial state of `task`.
    pub fn new(task: Task) -> Self {
        let pos = task.start;
        let mut s = Self {
            task,
            pos,
            seen: false,
        };
        s.look();
        s
    }

    /// Agent (row, column).
    pub fn pos(&self) -> (usize, usize) {
        self.pos
    }

    fn look(&mut self) {
        let (g, p) = (self.task.goal, self.pos);
        if g.0.abs_diff(p.0) <= 1 && g.1.abs_diff(p.1) <= 1 {
            self.seen = true;
        }
    }

    fn offset_token(base: TokenId, d: i64) -> TokenId {
        // |d| <= MAX_SIZE - 1 = 6 by construction, so base + 6 + d is in base..=base + 12.
        let d = d.clamp(-6, 6);
        base + u32::try_from(d + 6).unwrap_or(6)
    }
}

impl Env for FogLake {
    fn vocab(&self) -> &'static Vocab {
        &VOCAB
    }

    fn grammar(&self) -> &'static Grammar {
        grammar()
    }

    fn max_turns(&self) -> usize {
        self.task.max_turns
    }

    fn goal(&self) -> Vec<TokenId> {
        Vec::new()
    }

    fn observe(&self) -> Vec<TokenId> {
        let mut o = Vec::with_capacity(13);
        o.push(GOAL);
        if self.seen || self.task.goal_view == GoalView::Always {
            let dr = self.task.goal.0 as i64 - self.pos.0 as i64;
            let dc = self.task.goal.1 as i64 - self.pos.1 as i64;
            o.push(Self::offset_token(R_MINUS6, dr));
            o.push(Self::offset_token(C_MINUS6, dc));
        } else {
            o.push(R_UNKNOWN);
            o.push(C_UNKNOWN);
        }
        o.push(VIEW);
        let n = self.task.size as i64;
        for dr in -1i64..=1 {
            for dc in -1i64..=1 {
                let (r, c) = (self.pos.0 as i64 + dr, self.pos.1 as i64 + dc);
                let cell = if dr == 0 && dc == 0 {
                    AGENT
                } else if r < 0 || c < 0 || r >= n || c >= n {
                    OUT
                } else if (r as usize, c as usize) == self.task.goal {
                    GOAL_CELL
                } else if self.task.hole(r as usize, c as usize) {
                    HOLE_CELL
                } else {
                    FLOOR
                };
                o.push(cell);
            }
        }
        o
    }

    /// Every move is admissible (a move off the grid is answered `wall`, as in the prototype).
    fn admissible(&self, action: &[TokenId]) -> bool {
        matches!(action, [N | S | E | W])
    }

    fn box_clone(&self) -> Box<dyn Env> {
        Box::new(self.clone())
    }

    fn act(&mut self, action: &[TokenId]) -> Outcome {
        let [mv] = action else {
            return Outcome::Continue(NO);
        };
        let Some(next) = step_pos(self.task.size, self.pos, *mv) else {
            return Outcome::Continue(WALL);
        };
        self.pos = next;
        self.look();
        if next == self.task.goal {
            Outcome::Win
        } else if self.task.hole(next.0, next.1) {
            Outcome::Lose(HOLE)
        } else {
            Outcome::Continue(OK)
        }
    }
}

env_kind!(
    FogLake,
    "foglake",
    split: |_| None,
    levels: [
            (
                "foglake-proto",
                "the FogLake configuration that learned in the prototype (training level): \
                    5x5, holes p=0.2, start-goal distance 3-4, 5 turns, relative goal + 3x3 view; \
                    random valid 6.4%, full-map oracle 100%",
                Params::proto(),
            ),
            (
                "foglake-hard",
                "FogLake OOD level: 7x7, distance 4-6, 6 turns, goal offset hidden until seen; \
                    random valid 1.7%, full-map oracle 100%",
                Params::hard(),
            ),
    ]
);
