//! Multi-turn text environments: FogLake, KeyRooms and TinyShop (see
//! `shared/design/ENVIRONMENTS.md`).
//!
//! Read in this order: [`vocab`] (token tables), [`grammar`] (the response automaton and the
//! validity mask), this module ([`Env`], [`Episode`], levels, the train/test split), then one
//! env, e.g. [`foglake`].
//!
//! One turn: the policy reads [`Episode::prompt`] =
//! `<bos> {goal} {history: did a ; a got f f}×k {observation}` and emits a response
//! `a (; a){0,2} end`. The actions run in order until one ends the episode; each gives one
//! feedback token. An unparseable response wastes the turn (feedback `bad`). Reward is 1 on
//! success, 0 otherwise, and only at the end; the turn limit ends the episode with 0.
//!
//! Observations are canonical: the same state gives byte-identical tokens (and text, see
//! [`Episode::observation_bytes`]), including state the agent could not otherwise see (e.g.
//! what it holds), so GiGPO can group identical states across the rollouts of one task.
//!
//! Train/test split: tasks are partitioned by their instance, not only by seed. Every task has
//! a [`Split`] fixed by its content (FogLake, TinyShop: canonical hash mod 5 == 0 is test;
//! KeyRooms: the (object, container) goal pair is one of 4 held-out pairs out of 20).
//! [`train_task`] only returns train instances; [`test_tasks`] draws from a separate seed stream,
//! keeps test instances and drops duplicates by canonical hash. So the sets are disjoint.

/// Implements [`EnvKind`] for an env file's `Kind` from the file's items: `Params`, `Task` (with
/// `canonical`), `VOCAB`, `grammar()`, `generate`, the env type's `new(task)`, the content split
/// (`None`: the default hash rule) and the named levels.
macro_rules! env_kind {
    ($env:ident, $name:literal, split: $split:expr, levels: [$(($lname:literal, $about:expr, $params:expr $(,)?)),* $(,)?] $(,)?) => {
        #[doc = concat!("`", $name, "` in the env registry ([`super::EnvKind`]).")]
        pub struct Kind;

        impl super::EnvKind for Kind {
            type Params = Params;
            type Task = Task;
            const NAME: &'static str = $name;
            fn vocab() -> &'static Vocab {
                &VOCAB
            }
            fn grammar() -> &'static Grammar {
                grammar()
            }
            fn generate(p: &Params, rng: &mut rand_chacha::ChaCha8Rng) -> Result<Task, EnvError> {
                generate(p, rng)
            }
            fn canonical(t: &Task) -> String {
                t.canonical()
            }
            fn split(t: &Task) -> Option<Split> {
                let f: fn(&Task) -> Option<Split> = $split;
                f(t)
            }
            fn env(t: &Task) -> Box<dyn Env> {
                Box::new($env::new(t.clone()))
            }
            fn levels() -> Vec<(&'static str, &'static str, Params)> {
                vec![$(($lname, $about, $params)),*]
            }
        }
    };
}

pub mod foglake;
pub mod grammar;
pub mod keyrooms;
pub mod tinyshop;
pub mod vocab;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use grammar::{Grammar, ParseError};
pub use vocab::{TokenId, TokenMask, Vocab};

use vocab::{BAD, BOS, DID, END, GOT, PAD, SEP, WIN};

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A word that is not in the vocabulary.
    #[error("token {token:?} is not in the {vocab} vocabulary")]
    UnknownToken { vocab: &'static str, token: String },
    /// A level name that [`level`] does not know.
    #[error("unknown level {0:?} (known: {known})", known = level_names().join(", "))]
    UnknownLevel(String),
    /// Level parameters outside what the generator supports.
    #[error("invalid parameters for {env}: {why}")]
    BadParams { env: &'static str, why: String },
    /// The generator found no instance after many tries.
    #[error("no {split:?} task found for {env} after {tries} tries")]
    NoTask {
        env: &'static str,
        split: Split,
        tries: usize,
    },
    /// More held-out tasks asked for than [`MAX_TEST_TASKS`].
    #[error("{n} held-out tasks asked for: at most {max}")]
    TooManyTasks { n: usize, max: usize },
}

/// The most held-out tasks [`test_tasks`] returns (each is found by rejection sampling over
/// distinct instances; far more than any level's evaluation needs).
pub const MAX_TEST_TASKS: usize = 1 << 16;

/// The result of one action inside a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The episode goes on; the feedback token for this action.
    Continue(TokenId),
    /// Solved: the episode ends with reward 1 (feedback `win`).
    Win,
    /// Failed for good (a hole, a wrong purchase): ends with reward 0; the feedback token.
    Lose(TokenId),
}

/// One environment instance: the state of one task. [`Episode`] adds the shared parts
/// (parsing responses, the turn limit, reward, history, prompts).
pub trait Env: Send {
    /// The env's token table.
    fn vocab(&self) -> &'static Vocab;
    /// The env's response grammar (state-independent).
    fn grammar(&self) -> &'static Grammar;
    /// Turn limit of this task.
    fn max_turns(&self) -> usize;
    /// The static goal, starting with `goal` (empty where the goal is part of the observation,
    /// as FogLake's relative goal).
    fn goal(&self) -> Vec<TokenId>;
    /// The canonical observation of the current state.
    fn observe(&self) -> Vec<TokenId>;
    /// Runs one parsed action (a complete template of the grammar).
    fn act(&mut self, action: &[TokenId]) -> Outcome;
    /// Whether `act(action)` would do something here (not answered `no` or `locked`).
    /// Decides the admissible mask; it must not depend on anything but the current state.
    fn admissible(&self, action: &[TokenId]) -> bool;
    /// A boxed copy of the current state (to simulate the earlier actions of a response).
    fn box_clone(&self) -> Box<dyn Env>;
}

/// Which validity mask [`Episode::valid_next`] applies (record it in a run's config:
/// `env.mask`, `aem train --mask`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum MaskMode {
    /// The action grammar only, whatever the state.
    ///
    /// [`Grammar::valid_next`]: state-independent, so it can be recomputed from a response's
    /// tokens alone.
    Grammar,
    /// The grammar narrowed to admissible actions (the default; like ALFWorld's admissible
    /// commands).
    ///
    /// Each action of the response must be one [`Env::admissible`] accepts in the state
    /// reached by the response's earlier actions, and nothing follows an action that ends the
    /// episode. Within a turn this uses the simulated state, so after `open box ;` the mask
    /// offers `take` only for what the box holds: an instruct LLM's "sensible next command"
    /// prior, a little stronger. Store the mask per sampled token (a `u64`) for the loss.
    #[default]
    Admissible,
}

/// How prompts are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptConfig {
    /// Past turns shown (k, 0..=2 in the design; larger values work).
    pub history: usize,
    /// The validity mask used by [`Episode::valid_next`].
    pub mask: MaskMode,
}

impl Default for PromptConfig {
    fn default() -> Self {
        Self {
            history: 0,
            mask: MaskMode::Admissible,
        }
    }
}

/// What one turn did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    /// One token per executed action, or `[bad]` if the response did not parse; empty if the
    /// episode had already ended.
    pub feedback: Vec<TokenId>,
    /// 1 on the turn that solved the task, else 0.
    pub reward: f32,
    /// Whether the episode is over (solved, failed, or out of turns).
    pub done: bool,
    /// Whether the response parsed.
    pub parsed: bool,
    /// Actions executed (those after a terminal one are skipped).
    pub actions_run: usize,
}

/// Where an episode stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Turns remain.
    Running,
    /// Solved.
    Won,
    /// Failed or out of turns.
    Lost,
}

/// One episode: an [`Env`] plus turn counting, reward and the prompt history.
pub struct Episode {
    env: Box<dyn Env>,
    cfg: PromptConfig,
    /// Last `cfg.history` turns, each `did a ; a got f f`.
    history: VecDeque<Vec<TokenId>>,
    turn: usize,
    status: Status,
}

impl Episode {
    /// A fresh episode of `task`.
    pub fn new(task: &Task, cfg: PromptConfig) -> Self {
        Self::from_env(task.env(), cfg)
    }

    /// A fresh episode around an env in its initial state.
    pub fn from_env(env: Box<dyn Env>, cfg: PromptConfig) -> Self {
        Self {
            env,
            cfg,
            history: VecDeque::new(),
            turn: 0,
            status: Status::Running,
        }
    }

    /// The env's token table.
    pub fn vocab(&self) -> &'static Vocab {
        self.env.vocab()
    }

    /// The env's response grammar.
    pub fn grammar(&self) -> &'static Grammar {
        self.env.grammar()
    }

    /// Turns taken so far.
    pub fn turn(&self) -> usize {
        self.turn
    }

    /// Turn limit.
    pub fn max_turns(&self) -> usize {
        self.env.max_turns()
    }

    /// Running, won or lost.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Whether the episode is over.
    pub fn done(&self) -> bool {
        self.status != Status::Running
    }

    /// Final reward so far: 1 if solved, else 0.
    pub fn reward(&self) -> f32 {
        if self.status == Status::Won {
            1.0
        } else {
            0.0
        }
    }

    /// The canonical observation tokens of the current state.
    pub fn observation(&self) -> Vec<TokenId> {
        self.env.observe()
    }

    /// The canonical observation as text (tokens joined by one space).
    pub fn observation_text(&self) -> String {
        self.vocab().decode(&self.env.observe())
    }

    /// The canonical observation as bytes (UTF-8 of [`Self::observation_text`]); equal states
    /// give equal bytes. Use these (or their hash) as GiGPO anchor keys within a task's group.
    pub fn observation_bytes(&self) -> Vec<u8> {
        self.observation_text().into_bytes()
    }

    /// The prompt for the next turn: `<bos> goal history observation`.
    pub fn prompt(&self) -> Vec<TokenId> {
        let mut p = vec![BOS];
        p.extend(self.env.goal());
        for h in &self.history {
            p.extend_from_slice(h);
        }
        p.extend(self.env.observe());
        p
    }

    /// The prompt as text.
    pub fn prompt_text(&self) -> String {
        self.vocab().decode(&self.prompt())
    }

    /// Tokens allowed after the response prefix `prefix` under the configured [`MaskMode`].
    /// Empty once `end` was read or if `prefix` is ungrammatical. Never empty otherwise: if no
    /// action is admissible it falls back to the grammar mask.
    pub fn valid_next(&self, prefix: &[TokenId]) -> TokenMask {
        let g = self.grammar();
        let gm = g.valid_next(prefix);
        if self.cfg.mask == MaskMode::Grammar || gm.is_empty() {
            return gm;
        }
        let mut parts = prefix.split(|&t| t == SEP);
        let Some(partial) = parts.next_back() else {
            return gm;
        };
        let mut sim = self.env.box_clone();
        for a in parts {
            if !matches!(sim.act(a), Outcome::Continue(_)) {
                return gm; // unreachable: `;` is never offered after a terminal action
            }
        }
        let mut m = TokenMask::EMPTY;
        for t in gm.iter() {
            if t == END {
                m.insert(END);
            } else if t == SEP {
                let mut after = sim.box_clone();
                if matches!(after.act(partial), Outcome::Continue(_)) {
                    m.insert(SEP);
                }
            } else {
                let mut cand = partial.to_vec();
                cand.push(t);
                if completable(sim.as_ref(), g, &mut cand) {
                    m.insert(t);
                }
            }
        }
        if m.is_empty() {
            gm
        } else {
            m
        }
    }

    /// One response of the uniformly random valid policy under this episode's mask.
    pub fn sample_uniform<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> Vec<TokenId> {
        grammar::sample_uniform_with(
            self.grammar().max_response_len(),
            |p| self.valid_next(p),
            rng,
        )
    }

    /// Runs one turn with the policy's `response` tokens. Never panics; after the end it
    /// returns `done` with empty feedback and changes nothing.
    pub fn step(&mut self, response: &[TokenId]) -> StepResult {
        if self.done() {
            return StepResult {
                feedback: Vec::new(),
                reward: 0.0,
                done: true,
                parsed: false,
                actions_run: 0,
            };
        }
        self.turn += 1;
        let mut feedback = Vec::new();
        let mut entry = vec![DID];
        let parsed = match self.grammar().parse(response) {
            Ok(actions) => {
                let body = response
                    .iter()
                    .copied()
                    .filter(|&t| t != PAD)
                    .take_while(|&t| t != END);
                entry.extend(body);
                for a in &actions {
                    match self.env.act(a) {
                        Outcome::Continue(f) => feedback.push(f),
                        Outcome::Win => {
                            feedback.push(WIN);
                            self.status = Status::Won;
                            break;
                        }
                        Outcome::Lose(f) => {
                            feedback.push(f);
                            self.status = Status::Lost;
                            break;
                        }
                    }
                }
                true
            }
            Err(_) => {
                feedback.push(BAD);
                false
            }
        };
        if self.status == Status::Running && self.turn >= self.env.max_turns() {
            self.status = Status::Lost;
        }
        entry.push(GOT);
        entry.extend_from_slice(&feedback);
        if self.cfg.history > 0 {
            self.history.push_back(entry);
            while self.history.len() > self.cfg.history {
                self.history.pop_front();
            }
        }
        StepResult {
            actions_run: if parsed { feedback.len() } else { 0 },
            feedback,
            reward: self.reward(),
            done: self.done(),
            parsed,
        }
    }
}

/// Whether the action prefix `cand` extends to an admissible complete action.
fn completable(env: &dyn Env, g: &Grammar, cand: &mut Vec<TokenId>) -> bool {
    if g.is_action(cand) && env.admissible(cand) {
        return true;
    }
    for t in g.action_next(cand).iter() {
        cand.push(t);
        let ok = completable(env, g, cand);
        cand.pop();
        if ok {
            return true;
        }
    }
    false
}

/// Which side of the split an instance belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Used for training.
    Train,
    /// Held out for evaluation.
    Test,
}

/// 64-bit FNV-1a: a stable hash (unlike `std`'s, fixed across Rust versions).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A level with its name.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedLevel {
    /// Name used in configs, e.g. `foglake-proto`.
    pub name: &'static str,
    /// What it is for.
    pub about: &'static str,
    /// Its parameters.
    pub level: Level,
}

/// One environment family, as the registry needs it: its tables, its generator, its tasks'
/// identity and split, and its named levels. A new environment is one file implementing this
/// and one line in [`registry!`].
pub trait EnvKind {
    /// Level parameters.
    type Params: Clone + PartialEq + std::fmt::Debug;
    /// One generated instance.
    type Task: Clone + PartialEq + Eq + std::fmt::Debug;
    /// The env's name (`foglake`).
    const NAME: &'static str;
    /// The token table.
    fn vocab() -> &'static Vocab;
    /// The response grammar.
    fn grammar() -> &'static Grammar;
    /// The instance a seeded RNG draws (either split).
    fn generate(p: &Self::Params, rng: &mut ChaCha8Rng) -> Result<Self::Task, EnvError>;
    /// A canonical text of the whole instance (equal instances give equal text).
    fn canonical(t: &Self::Task) -> String;
    /// The split fixed by the instance's content, or `None` for the default rule (canonical
    /// hash mod 5 == 0 is test).
    fn split(_t: &Self::Task) -> Option<Split> {
        None
    }
    /// A fresh env in the task's initial state.
    fn env(t: &Self::Task) -> Box<dyn Env>;
    /// The named levels: (name, what it is for, parameters).
    fn levels() -> Vec<(&'static str, &'static str, Self::Params)>;
}

/// The registered environments: makes [`Level`] and [`Task`] (one variant per env) and their
/// dispatch to each env's [`EnvKind`].
macro_rules! registry {
    ($($variant:ident => $kind:ty),* $(,)?) => {
        /// Parameters of a level, per env.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Level {
            $(#[doc = concat!("A level of `", stringify!($kind), "`.")]
            $variant(<$kind as EnvKind>::Params),)*
        }

        /// One task instance (generated from a level and a seed).
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Task {
            $(#[doc = concat!("An instance of `", stringify!($kind), "`.")]
            $variant(<$kind as EnvKind>::Task),)*
        }

        /// All named levels of every env. Rates in their descriptions: the uniformly random
        /// valid policy under the admissible mask (see [`grammar`]), 8000 training tasks, as
        /// measured by `tests/env_rates.rs`.
        pub fn levels() -> Vec<NamedLevel> {
            let mut out = Vec::new();
            $(
                for (name, about, p) in <$kind as EnvKind>::levels() {
                    out.push(NamedLevel { name, about, level: Level::$variant(p) });
                }
            )*
            out
        }

        impl Level {
            /// The env's name.
            pub fn env_name(&self) -> &'static str {
                match self { $(Level::$variant(_) => <$kind as EnvKind>::NAME,)* }
            }

            /// The env's token table.
            pub fn vocab(&self) -> &'static Vocab {
                match self { $(Level::$variant(_) => <$kind as EnvKind>::vocab(),)* }
            }

            /// The env's response grammar.
            pub fn grammar(&self) -> &'static Grammar {
                match self { $(Level::$variant(_) => <$kind as EnvKind>::grammar(),)* }
            }

            /// The instance for `seed`, of either split (deterministic).
            pub fn generate(&self, seed: u64) -> Result<Task, EnvError> {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                Ok(match self {
                    $(Level::$variant(p) => Task::$variant(<$kind as EnvKind>::generate(p, &mut rng)?),)*
                })
            }
        }

        impl Task {
            /// A canonical text of the whole instance (equal instances give equal text).
            pub fn canonical(&self) -> String {
                match self { $(Task::$variant(t) => <$kind as EnvKind>::canonical(t),)* }
            }

            /// FNV-1a of [`Self::canonical`].
            pub fn hash(&self) -> u64 {
                fnv1a(self.canonical().as_bytes())
            }

            /// The split this instance belongs to (see the module docs).
            pub fn split(&self) -> Split {
                let own = match self { $(Task::$variant(t) => <$kind as EnvKind>::split(t),)* };
                own.unwrap_or(if self.hash().is_multiple_of(5) { Split::Test } else { Split::Train })
            }

            /// A fresh env in the task's initial state.
            pub fn env(&self) -> Box<dyn Env> {
                match self { $(Task::$variant(t) => <$kind as EnvKind>::env(t),)* }
            }
        }
    };
}

registry! {
    FogLake => foglake::Kind,
    KeyRooms => keyrooms::Kind,
    TinyShop => tinyshop::Kind,
}

/// Other names a level is known by: (alias, level name).
const LEVEL_ALIASES: [(&str, &str); 1] = [("foglake-train", "foglake-proto")];

/// Every name [`level`] accepts: the levels' names, then the aliases.
pub fn level_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = levels().iter().map(|l| l.name).collect();
    names.extend(LEVEL_ALIASES.iter().map(|(alias, _)| *alias));
    names
}

/// A named level by name (`foglake-train` is an alias of `foglake-proto`).
pub fn level(name: &str) -> Result<Level, EnvError> {
    let target = LEVEL_ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, to)| *to);
    levels()
        .into_iter()
        .find(|l| l.name == target)
        .map(|l| l.level)
        .ok_or_else(|| EnvError::UnknownLevel(name.to_string()))
}

/// The name of a registered level (`env.level`, `env.ood_level`, `aem train --level`): checked
/// by [`level`] when made and kept as written, so a run recorded as `foglake-train` stays so.
/// A checked name rather than an enum because the names are declared once, by each env's
/// [`EnvKind::levels`]: a new level or env needs no second list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LevelName(String);

impl LevelName {
    /// A name of this crate's own (a default); [`LevelName::level`] still checks it.
    pub(crate) fn builtin(name: &'static str) -> Self {
        Self(name.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The level's parameters.
    pub fn level(&self) -> Result<Level, EnvError> {
        level(&self.0)
    }
}

impl TryFrom<String> for LevelName {
    type Error = EnvError;
    fn try_from(name: String) -> Result<Self, EnvError> {
        level(&name)?;
        Ok(Self(name))
    }
}

impl std::str::FromStr for LevelName {
    type Err = EnvError;
    fn from_str(name: &str) -> Result<Self, EnvError> {
        Self::try_from(name.to_string())
    }
}

impl From<LevelName> for String {
    fn from(name: LevelName) -> String {
        name.0
    }
}

impl std::fmt::Display for LevelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `value_parser!(LevelName)`: the registered levels as clap's possible values (with their
/// descriptions in `--help`, the aliases accepted but not listed).
impl clap::builder::ValueParserFactory for LevelName {
    type Parser = clap::builder::TryMapValueParser<
        clap::builder::PossibleValuesParser,
        fn(String) -> Result<LevelName, EnvError>,
    >;
    fn value_parser() -> Self::Parser {
        use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
        let values = levels().into_iter().map(|l| {
            LEVEL_ALIASES
                .iter()
                .filter(|(_, to)| *to == l.name)
                .fold(PossibleValue::new(l.name).help(l.about), |v, (alias, _)| {
                    v.alias(*alias)
                })
        });
        PossibleValuesParser::new(values).try_map(LevelName::try_from as fn(String) -> _)
    }
}

/// Mixes a seed stream id and an index into one seed (splitmix64 finaliser).
fn mix(stream: u64, i: u64) -> u64 {
    let mut z = stream
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(i)
        .wrapping_add(0x6a09_e667_f3bc_c909);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const TRAIN_STREAM: u64 = 0x7261_696e; // "rain"
const TEST_STREAM: u64 = 0x7465_7374; // "test"
const MAX_TRIES: usize = 1000;

/// The training task for `seed`: deterministic, always of the train split.
pub fn train_task(level: &Level, seed: u64) -> Result<Task, EnvError> {
    for i in 0..MAX_TRIES {
        let t = level.generate(mix(TRAIN_STREAM ^ seed.rotate_left(17), i as u64))?;
        if t.split() == Split::Train {
            return Ok(t);
        }
    }
    Err(EnvError::NoTask {
        env: level.env_name(),
        split: Split::Train,
        tries: MAX_TRIES,
    })
}

/// The first `n` distinct test tasks of a level (deterministic; distinct by canonical hash;
/// all of the test split, so disjoint from every [`train_task`]).
pub fn test_tasks(level: &Level, n: usize) -> Result<Vec<Task>, EnvError> {
    if n > MAX_TEST_TASKS {
        return Err(EnvError::TooManyTasks {
            n,
            max: MAX_TEST_TASKS,
        });
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    let budget = MAX_TRIES.saturating_add(n.saturating_mul(100));
    for i in 0..budget {
        if out.len() == n {
            break;
        }
        let t = level.generate(mix(TEST_STREAM, i as u64))?;
        if t.split() == Split::Test && seen.insert(t.hash()) {
            out.push(t);
        }
    }
    if out.len() < n {
        return Err(EnvError::NoTask {
            env: level.env_name(),
            split: Split::Test,
            tries: budget,
        });
    }
    Ok(out)
}

/// Success rate of the uniformly random valid policy (see [`grammar`]) under `mask` over `episodes`
/// training tasks (task seeds `0..episodes`, policy seeded by `seed`).
pub fn random_valid_success(
    level: &Level,
    mask: MaskMode,
    episodes: usize,
    seed: u64,
) -> Result<f64, EnvError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut wins = 0usize;
    let cfg = PromptConfig { history: 0, mask };
    for i in 0..episodes {
        let task = train_task(level, i as u64)?;
        let mut ep = Episode::new(&task, cfg);
        while !ep.done() {
            let r = ep.sample_uniform(&mut rng);
            ep.step(&r);
        }
        if ep.status() == Status::Won {
            wins += 1;
        }
    }
    Ok(wins as f64 / episodes.max(1) as f64)
}
