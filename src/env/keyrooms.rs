//! KeyRooms: an ALFWorld-like house of rooms in a line.
//!
//! Rooms are named by colour; each holds closed containers; objects lie hidden in containers;
//! optionally one door is locked and its key lies in a container on the start side. Goal: put
//! object X in container Y (`goal coin chest`). Actions:
//! - `go C`: to the adjacent room C (`no` if not adjacent; `locked` if the door is locked and
//!   the agent does not hold the key; holding it unlocks the door for good, the key stays in the
//!   lock, the hand is empty again);
//! - `open K`: opens container K in this room (`no` if absent or already open);
//! - `take O`: takes O from an open container here into the (single) hand (`no` otherwise);
//! - `put O K`: puts the held O into the open container K here (`no` otherwise); putting the
//!   goal object into the goal container wins.
//!
//! Observation: `room C exits C1 [locked] [C2 [locked]] see K1 shut K2 open O.. hold O|none`,
//! exits west then east, containers and contents in table order; contents only of open
//! containers. Prompt goal: `goal O K`.
//!
//! Split: 4 of the 20 (object, container) goal pairs are held out for test (those with
//! `object + container ≡ 0 mod 5`, indices in table order: coin–box, pen–chest, book–drawer,
//! ball–bag).
//!
//! Vocabulary (ids): 0–10 shared, 11 `room`, 12 `exits`, 13 `see`, 14 `hold`, 15 `none`,
//! 16 `go`, 17 `open`, 18 `take`, 19 `put`, 20 `shut`, 21 `locked`, 22–25 `red blue green
//! yellow`, 26–29 `box chest drawer bag`, 30–34 `coin cup ball book pen`, 35 `key`.

use std::sync::OnceLock;

use rand::seq::SliceRandom;
use rand::Rng;

use super::grammar::Grammar;
use super::vocab::{TokenId, TokenMask, Vocab, GOAL, NO, OK, SHARED};
use super::{Env, EnvError, Outcome, Split};

/// The KeyRooms token table.
pub const TOKENS: [&str; 36] = [
    SHARED[0], SHARED[1], SHARED[2], SHARED[3], SHARED[4], SHARED[5], SHARED[6], SHARED[7],
    SHARED[8], SHARED[9], SHARED[10], "room", "exits", "see", "hold", "none", "go", "open", "take",
    "put", "shut", "locked", "red", "blue", "green", "yellow", "box", "chest", "drawer", "bag",
    "coin", "cup", "ball", "book", "pen", "key",
];
/// The KeyRooms vocabulary.
pub static VOCAB: Vocab = Vocab::new("keyrooms", &TOKENS);

/// `room`
pub const ROOM: TokenId = 11;
/// `exits`
pub const EXITS: TokenId = 12;
/// `see`
pub const SEE: TokenId = 13;
/// `hold`
pub const HOLD: TokenId = 14;
/// `none`
pub const NONE: TokenId = 15;
/// `go`
pub const GO: TokenId = 16;
/// `open` (action and container state)
pub const OPEN: TokenId = 17;
/// `take`
pub const TAKE: TokenId = 18;
/// `put`
pub const PUT: TokenId = 19;
/// `shut`
pub const SHUT: TokenId = 20;
/// `locked` (exit state and feedback)
pub const LOCKED: TokenId = 21;
/// First colour (`red`); 4 colours.
pub const COLOUR0: TokenId = 22;
/// First container (`box`); 4 containers.
pub const CONTAINER0: TokenId = 26;
/// First goal object (`coin`); 5 objects.
pub const OBJECT0: TokenId = 30;
/// The key (an object that is never a goal).
pub const KEY: TokenId = 35;

/// Number of room colours.
pub const COLOURS: usize = 4;
/// Number of container kinds.
pub const CONTAINERS: usize = 4;
/// Number of goal objects.
pub const OBJECTS: usize = 5;

fn tok(base: TokenId, i: usize) -> TokenId {
    base + u32::try_from(i).unwrap_or(0)
}

/// The response grammar: actions `go C | open K | take O | put O K` (O includes `key`).
pub fn grammar() -> &'static Grammar {
    static G: OnceLock<Grammar> = OnceLock::new();
    G.get_or_init(|| {
        let colours = TokenMask::of(&(0..COLOURS).map(|i| tok(COLOUR0, i)).collect::<Vec<_>>());
        let conts = TokenMask::of(
            &(0..CONTAINERS)
                .map(|i| tok(CONTAINER0, i))
                .collect::<Vec<_>>(),
        );
        let mut objs: Vec<TokenId> = (0..OBJECTS).map(|i| tok(OBJECT0, i)).collect();
        objs.push(KEY);
        let objs = TokenMask::of(&objs);
        Grammar::new(
            vec![
                vec![TokenMask::of(&[GO]), colours],
                vec![TokenMask::of(&[OPEN]), conts],
                vec![TokenMask::of(&[TAKE]), objs],
                vec![TokenMask::of(&[PUT]), objs, conts],
            ],
            3,
        )
    })
}

/// Whether the (object, container) goal pair is held out for test.
pub fn held_out(object: usize, container: usize) -> bool {
    (object + container).is_multiple_of(5)
}

/// Level parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Rooms in the line (1..=4).
    pub rooms: usize,
    /// Containers in all (rooms..=4; every room has one).
    pub containers: usize,
    /// Goal-type objects placed (1..=5).
    pub objects: usize,
    /// One door is locked (needs rooms >= 2).
    pub locked: bool,
    /// Turn limit.
    pub max_turns: usize,
}

impl Params {
    /// Training level (tuned to 5–20% random valid success).
    pub fn train() -> Self {
        Self {
            rooms: 2,
            containers: 3,
            objects: 2,
            locked: false,
            max_turns: 6,
        }
    }

    /// Hard (OOD) level: 3 rooms and a locked door (tuned to 1–3%).
    pub fn hard() -> Self {
        Self {
            rooms: 3,
            containers: 4,
            objects: 3,
            locked: true,
            max_turns: 8,
        }
    }
}

/// Where an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Place {
    /// In container (index).
    In(usize),
    /// In the agent's hand.
    Hand,
    /// Used up (the key, once in its lock).
    Gone,
}

/// One world. Indices: rooms by line position; containers and objects by table index
/// (object index `OBJECTS` is the key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Task {
    /// Colour index of each room, west to east.
    pub room_colour: Vec<usize>,
    /// Room of each container kind (`None` = not in this world).
    pub container_room: [Option<usize>; CONTAINERS],
    /// Start place of each object kind, the key last (`None` = not in this world).
    pub object_at: [Option<usize>; OBJECTS + 1],
    /// The locked door is between room `d` and `d + 1`.
    pub locked_door: Option<usize>,
    /// Goal (object, container).
    pub goal: (usize, usize),
    /// Turn limit.
    pub max_turns: usize,
}

impl Task {
    /// Canonical text of the instance.
    pub fn canonical(&self) -> String {
        let name = |t: TokenId| VOCAB.token(t).unwrap_or("?");
        let mut s = format!("keyrooms t{} rooms", self.max_turns);
        for &c in &self.room_colour {
            s.push(' ');
            s.push_str(name(tok(COLOUR0, c)));
        }
        for (k, r) in self.container_room.iter().enumerate() {
            if let Some(r) = r {
                s.push_str(&format!(" {}@{r}", name(tok(CONTAINER0, k))));
            }
        }
        for (o, k) in self.object_at.iter().enumerate() {
            if let Some(k) = k {
                s.push_str(&format!(
                    " {}:{}",
                    name(tok(OBJECT0, o)),
                    name(tok(CONTAINER0, *k))
                ));
            }
        }
        if let Some(d) = self.locked_door {
            s.push_str(&format!(" lock {d}"));
        }
        s.push_str(&format!(
            " goal {} {}",
            name(tok(OBJECT0, self.goal.0)),
            name(tok(CONTAINER0, self.goal.1))
        ));
        s
    }

    /// Test iff the goal pair is held out.
    pub fn split(&self) -> Split {
        if held_out(self.goal.0, self.goal.1) {
            Split::Test
        } else {
            Split::Train
        }
    }
}

/// Draws one instance.
pub fn generate<R: Rng + ?Sized>(p: &Params, rng: &mut R) -> Result<Task, EnvError> {
    let bad = |why: &str| EnvError::BadParams {
        env: "keyrooms",
        why: why.to_string(),
    };
    if !(1..=COLOURS).contains(&p.rooms) {
        return Err(bad("rooms must be in 1..=4"));
    }
    if !(p.rooms..=CONTAINERS).contains(&p.containers) || p.containers < 2 {
        return Err(bad("containers must be in max(rooms, 2)..=4"));
    }
    if !(1..=OBJECTS).contains(&p.objects) || p.max_turns == 0 {
        return Err(bad("objects must be in 1..=5 and max_turns >= 1"));
    }
    if p.locked && p.rooms < 2 {
        return Err(bad("a locked door needs two rooms"));
    }
    const TRIES: usize = 1000;
    for _ in 0..TRIES {
        let mut colours: Vec<usize> = (0..COLOURS).collect();
        colours.shuffle(rng);
        colours.truncate(p.rooms);
        let mut kinds: Vec<usize> = (0..CONTAINERS).collect();
        kinds.shuffle(rng);
        kinds.truncate(p.containers);
        let mut container_room = [None; CONTAINERS];
        for (i, &k) in kinds.iter().enumerate() {
            // The first `rooms` containers give every room one; the rest go anywhere.
            container_room[k] = Some(if i < p.rooms {
                i
            } else {
                rng.random_range(0..p.rooms)
            });
        }
        let mut objs: Vec<usize> = (0..OBJECTS).collect();
        objs.shuffle(rng);
        objs.truncate(p.objects);
        let mut object_at = [None; OBJECTS + 1];
        for &o in &objs {
            object_at[o] = Some(kinds[rng.random_range(0..kinds.len())]);
        }
        let goal_obj = objs[rng.random_range(0..objs.len())];
        let others: Vec<usize> = kinds
            .iter()
            .copied()
            .filter(|&k| Some(k) != object_at[goal_obj])
            .collect();
        if others.is_empty() {
            continue;
        }
        let goal_cont = others[rng.random_range(0..others.len())];
        let mut locked_door = None;
        if p.locked {
            let d = rng.random_range(0..p.rooms - 1);
            let room_of = |k: usize| container_room[k].unwrap_or(0);
            // The lock must matter: the goal object or container lies beyond it.
            let beyond =
                object_at[goal_obj].is_some_and(|k| room_of(k) > d) || room_of(goal_cont) > d;
            let near: Vec<usize> = kinds.iter().copied().filter(|&k| room_of(k) <= d).collect();
            if !beyond || near.is_empty() {
                continue;
            }
            object_at[OBJECTS] = Some(near[rng.random_range(0..near.len())]);
            locked_door = Some(d);
        }
        return Ok(Task {
            room_colour: colours,
            container_room,
            object_at,
            locked_door,
            goal: (goal_obj, goal_cont),
            max_turns: p.max_turns,
        });
    }
    Err(EnvError::NoTask {
        env: "keyrooms",
        split: Split::Train,
        tries: TRIES,
    })
}

/// A KeyRooms episode state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyRooms {
    task: Task,
    room: usize,
    open: [bool; CONTAINERS],
    place: [Option<Place>; OBJECTS + 1],
    locked: bool,
}

impl KeyRooms {
    /// The initial state of `task`: in the westmost room, every container shut, hand empty.
    pub fn new(task: Task) -> Self {
        let place = task.object_at.map(|k| k.map(Place::In));
        let locked = task.locked_door.is_some();
        Self {
            task,
            room: 0,
            open: [false; CONTAINERS],
            place,
            locked,
        }
    }

    fn held(&self) -> Option<usize> {
        self.place.iter().position(|p| *p == Some(Place::Hand))
    }

    /// Object index of an object token (the key is `OBJECTS`).
    fn object_index(t: TokenId) -> Option<usize> {
        if t == KEY {
            Some(OBJECTS)
        } else {
            t.checked_sub(OBJECT0)
                .and_then(|i| usize::try_from(i).ok())
                .filter(|&i| i < OBJECTS)
        }
    }

    fn object_token(o: usize) -> TokenId {
        if o == OBJECTS {
            KEY
        } else {
            tok(OBJECT0, o)
        }
    }

    fn container_index(t: TokenId) -> Option<usize> {
        t.checked_sub(CONTAINER0)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < CONTAINERS)
    }

    fn here(&self, k: usize) -> bool {
        self.task.container_room.get(k).copied().flatten() == Some(self.room)
    }

    /// The room a `go` to colour token `c` leads to, if it is an adjacent room.
    fn target_room(&self, c: TokenId) -> Option<usize> {
        let ci = c
            .checked_sub(COLOUR0)
            .and_then(|i| usize::try_from(i).ok())?;
        let r = self.task.room_colour.iter().position(|&x| x == ci)?;
        (r.abs_diff(self.room) == 1).then_some(r)
    }

    fn door_locked(&self, a: usize, b: usize) -> bool {
        self.locked && self.task.locked_door == Some(a.min(b))
    }
}

impl Env for KeyRooms {
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
        vec![
            GOAL,
            tok(OBJECT0, self.task.goal.0),
            tok(CONTAINER0, self.task.goal.1),
        ]
    }

    fn observe(&self) -> Vec<TokenId> {
        let colour = |r: usize| tok(COLOUR0, self.task.room_colour.get(r).copied().unwrap_or(0));
        let mut o = vec![ROOM, colour(self.room), EXITS];
        let mut exits = Vec::new();
        if self.room > 0 {
            exits.push(self.room - 1);
        }
        if self.room + 1 < self.task.room_colour.len() {
            exits.push(self.room + 1);
        }
        for r in exits {
            o.push(colour(r));
            if self.door_locked(self.room, r) {
                o.push(LOCKED);
            }
        }
        o.push(SEE);
        for k in 0..CONTAINERS {
            if !self.here(k) {
                continue;
            }
            o.push(tok(CONTAINER0, k));
            if self.open[k] {
                o.push(OPEN);
                for (obj, p) in self.place.iter().enumerate() {
                    if *p == Some(Place::In(k)) {
                        o.push(Self::object_token(obj));
                    }
                }
            } else {
                o.push(SHUT);
            }
        }
        o.push(HOLD);
        o.push(self.held().map_or(NONE, Self::object_token));
        o
    }

    fn admissible(&self, action: &[TokenId]) -> bool {
        match *action {
            [GO, c] => self
                .target_room(c)
                .is_some_and(|r| !self.door_locked(self.room, r) || self.held() == Some(OBJECTS)),
            [OPEN, k] => Self::container_index(k).is_some_and(|k| self.here(k) && !self.open[k]),
            [TAKE, t] => Self::object_index(t).is_some_and(|obj| {
                self.held().is_none()
                    && matches!(self.place[obj], Some(Place::In(k)) if self.here(k) && self.open[k])
            }),
            [PUT, t, k] => match (Self::object_index(t), Self::container_index(k)) {
                (Some(obj), Some(k)) => self.held() == Some(obj) && self.here(k) && self.open[k],
                _ => false,
            },
            _ => false,
        }
    }

    fn box_clone(&self) -> Box<dyn Env> {
        Box::new(self.clone())
    }

    fn act(&mut self, action: &[TokenId]) -> Outcome {
        match *action {
            [GO, c] => {
                let Some(r) = self.target_room(c) else {
                    return Outcome::Continue(NO);
                };
                if self.door_locked(self.room, r) {
                    if self.held() != Some(OBJECTS) {
                        return Outcome::Continue(LOCKED);
                    }
                    self.locked = false;
                    self.place[OBJECTS] = Some(Place::Gone);
                }
                self.room = r;
                Outcome::Continue(OK)
            }
            [OPEN, k] => match Self::container_index(k) {
                Some(k) if self.here(k) && !self.open[k] => {
                    self.open[k] = true;
                    Outcome::Continue(OK)
                }
                _ => Outcome::Continue(NO),
            },
            [TAKE, t] => match Self::object_index(t) {
                Some(obj) if self.held().is_none() => match self.place[obj] {
                    Some(Place::In(k)) if self.here(k) && self.open[k] => {
                        self.place[obj] = Some(Place::Hand);
                        Outcome::Continue(OK)
                    }
                    _ => Outcome::Continue(NO),
                },
                _ => Outcome::Continue(NO),
            },
            [PUT, t, k] => match (Self::object_index(t), Self::container_index(k)) {
                (Some(obj), Some(k))
                    if self.held() == Some(obj) && self.here(k) && self.open[k] =>
                {
                    self.place[obj] = Some(Place::In(k));
                    if (obj, k) == self.task.goal {
                        Outcome::Win
                    } else {
                        Outcome::Continue(OK)
                    }
                }
                _ => Outcome::Continue(NO),
            },
            _ => Outcome::Continue(NO),
        }
    }
}

env_kind!(
    KeyRooms,
    "keyrooms",
    split: |t| Some(t.split()),
    levels: [
            (
                "keyrooms-train",
                "KeyRooms training level: 2 rooms, 3 containers, 2 objects, 6 turns; random valid 9.1%",
                Params::train(),
            ),
            (
                "keyrooms-hard",
                "KeyRooms OOD level: 3 rooms, 4 containers, 3 objects, a locked door, 8 turns; \
                    random valid 1.5%",
                Params::hard(),
            ),
    ]
);
