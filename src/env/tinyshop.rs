//! TinyShop: a WebShop-like catalogue.
//!
//! A catalogue of 8–16 items (type, colour, sizes, price level p1–p4); exactly one satisfies
//! the goal `goal buy red shirt [size m] max p3` (that type and colour, price ≤ p3, and on
//! levels with a size step, sold in that size). Pages:
//! - home: `page home`;
//! - results: `page results search w.. i1 red shirt p2 i2 .. i3 .. [more]`: items sharing at
//!   least one word with the query, by number of shared words then catalogue order, 3 per page;
//! - item: `page item search w.. red shirt p2 sizes s m sel none|s|m|l`.
//!
//! Actions: `search w1 [w2 [w3]]` (words: types and colours; from any page, to the first
//! results page), `click i1..i3` (results → item), `next` (next 3 results), `back` (item →
//! first results page of the same query; results → home), `select z` (item page, a size it
//! sells), `buy` (item page: terminal and irreversible; wins iff it is the goal item and, with
//! a size step, the goal size is selected; elsewhere `no`). Inapplicable actions give `no`.
//!
//! Vocabulary (ids): 0–10 shared, 11 `page`, 12 `home`, 13 `results`, 14 `item`, 15 `search`,
//! 16 `click`, 17 `next`, 18 `back`, 19 `select`, 20 `buy`, 21 `size`, 22 `max`, 23 `sizes`,
//! 24 `sel`, 25 `none`, 26 `more`, 27–29 `i1 i2 i3`, 30–33 `shirt hat shoe bag`, 34–37 `red
//! blue green black`, 38–40 `s m l`, 41–44 `p1 p2 p3 p4`.

use std::sync::OnceLock;

use rand::Rng;

use super::grammar::Grammar;
use super::vocab::{TokenId, TokenMask, Vocab, GOAL, NO, OK, SHARED};
use super::{Env, EnvError, Outcome, Split};

/// The TinyShop token table.
pub const TOKENS: [&str; 45] = [
    SHARED[0], SHARED[1], SHARED[2], SHARED[3], SHARED[4], SHARED[5], SHARED[6], SHARED[7],
    SHARED[8], SHARED[9], SHARED[10], "page", "home", "results", "item", "search", "click", "next",
    "back", "select", "buy", "size", "max", "sizes", "sel", "none", "more", "i1", "i2", "i3",
    "shirt", "hat", "shoe", "bag", "red", "blue", "green", "black", "s", "m", "l", "p1", "p2",
    "p3", "p4",
];
/// The TinyShop vocabulary.
pub static VOCAB: Vocab = Vocab::new("tinyshop", &TOKENS);

/// `page`
pub const PAGE: TokenId = 11;
/// `home`
pub const HOME: TokenId = 12;
/// `results`
pub const RESULTS: TokenId = 13;
/// `item`
pub const ITEM: TokenId = 14;
/// `search`
pub const SEARCH: TokenId = 15;
/// `click`
pub const CLICK: TokenId = 16;
/// `next`
pub const NEXT: TokenId = 17;
/// `back`
pub const BACK: TokenId = 18;
/// `select`
pub const SELECT: TokenId = 19;
/// `buy`
pub const BUY: TokenId = 20;
/// `size`
pub const SIZE: TokenId = 21;
/// `max`
pub const MAX: TokenId = 22;
/// `sizes`
pub const SIZES: TokenId = 23;
/// `sel`
pub const SEL: TokenId = 24;
/// `none`
pub const NONE: TokenId = 25;
/// `more`: a next results page exists.
pub const MORE: TokenId = 26;
/// `i1`; slots `i1..i3`.
pub const SLOT0: TokenId = 27;
/// First type (`shirt`); 4 types.
pub const TYPE0: TokenId = 30;
/// First colour (`red`); 4 colours.
pub const COLOUR0: TokenId = 34;
/// First size (`s`); 3 sizes.
pub const SIZE0: TokenId = 38;
/// First price level (`p1`); 4 levels.
pub const PRICE0: TokenId = 41;

/// Number of item types.
pub const TYPES: usize = 4;
/// Number of colours.
pub const COLOURS: usize = 4;
/// Number of sizes.
pub const SIZE_COUNT: usize = 3;
/// Number of price levels.
pub const PRICES: usize = 4;
/// Results per page.
pub const PER_PAGE: usize = 3;

fn tok(base: TokenId, i: usize) -> TokenId {
    base + u32::try_from(i).unwrap_or(0)
}

/// Whether the size bit set `sizes` holds size `z`.
fn sells(sizes: u8, z: usize) -> bool {
    z < 8 && sizes & (1u8 << z) != 0
}

fn index(t: TokenId, base: TokenId, n: usize) -> Option<usize> {
    t.checked_sub(base)
        .and_then(|i| usize::try_from(i).ok())
        .filter(|&i| i < n)
}

/// The response grammar: `search w [w [w]] | click i | next | back | select z | buy`.
pub fn grammar() -> &'static Grammar {
    static G: OnceLock<Grammar> = OnceLock::new();
    G.get_or_init(|| {
        let mut words: Vec<TokenId> = (0..TYPES).map(|i| tok(TYPE0, i)).collect();
        words.extend((0..COLOURS).map(|i| tok(COLOUR0, i)));
        let words = TokenMask::of(&words);
        let slots = TokenMask::of(&(0..PER_PAGE).map(|i| tok(SLOT0, i)).collect::<Vec<_>>());
        let sizes = TokenMask::of(&(0..SIZE_COUNT).map(|i| tok(SIZE0, i)).collect::<Vec<_>>());
        let one = |t: TokenId| TokenMask::of(&[t]);
        Grammar::new(
            vec![
                vec![one(SEARCH), words],
                vec![one(SEARCH), words, words],
                vec![one(SEARCH), words, words, words],
                vec![one(CLICK), slots],
                vec![one(NEXT)],
                vec![one(BACK)],
                vec![one(SELECT), sizes],
                vec![one(BUY)],
            ],
            3,
        )
    })
}

/// Level parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Catalogue size (3..=16).
    pub items: usize,
    /// The goal names a size that must be selected before `buy`.
    pub size_step: bool,
    /// Turn limit.
    pub max_turns: usize,
}

impl Params {
    /// Training level (tuned to 5–20% random valid success).
    pub fn train() -> Self {
        Self {
            items: 8,
            size_step: false,
            max_turns: 10,
        }
    }

    /// Hard (OOD) level: a size to select before buying (tuned to 1–3%; the size step makes
    /// it hard, so the catalogue is smaller than the training level's to stay in the band).
    pub fn hard() -> Self {
        Self {
            items: 6,
            size_step: true,
            max_turns: 12,
        }
    }
}

/// One catalogue item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Item {
    /// Type index.
    pub kind: usize,
    /// Colour index.
    pub colour: usize,
    /// Bit `z` = sold in size `z`.
    pub sizes: u8,
    /// Price level index (0 = p1).
    pub price: usize,
}

/// What the goal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Goal {
    /// Type index.
    pub kind: usize,
    /// Colour index.
    pub colour: usize,
    /// Size index, on levels with a size step.
    pub size: Option<usize>,
    /// Highest price level index allowed.
    pub max_price: usize,
}

impl Goal {
    /// Whether `item` satisfies the goal.
    pub fn accepts(&self, item: &Item) -> bool {
        item.kind == self.kind
            && item.colour == self.colour
            && item.price <= self.max_price
            && self.size.is_none_or(|z| sells(item.sizes, z))
    }
}

/// One shop.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Task {
    /// The catalogue, in catalogue order.
    pub items: Vec<Item>,
    /// The goal.
    pub goal: Goal,
    /// Index of the only item the goal accepts.
    pub target: usize,
    /// Turn limit.
    pub max_turns: usize,
}

impl Task {
    /// Canonical text of the instance.
    pub fn canonical(&self) -> String {
        let g = &self.goal;
        let mut s = format!(
            "tinyshop t{} goal {} {} {:?} {} items",
            self.max_turns, g.kind, g.colour, g.size, g.max_price
        );
        for it in &self.items {
            s.push_str(&format!(
                " {}.{}.{}.{}",
                it.kind, it.colour, it.sizes, it.price
            ));
        }
        s
    }

    /// Always [`Split::Train`] here; the split is by hash, see [`super::Task::split`].
    pub fn split(&self) -> Split {
        Split::Train
    }
}

/// Draws one instance.
pub fn generate<R: Rng + ?Sized>(p: &Params, rng: &mut R) -> Result<Task, EnvError> {
    if !(3..=16).contains(&p.items) || p.max_turns == 0 {
        return Err(EnvError::BadParams {
            env: "tinyshop",
            why: "items must be in 3..=16 and max_turns >= 1".to_string(),
        });
    }
    let random_item = |rng: &mut R| Item {
        kind: rng.random_range(0..TYPES),
        colour: rng.random_range(0..COLOURS),
        sizes: rng.random_range(1..8u8),
        price: rng.random_range(0..PRICES),
    };
    let target_item = random_item(rng);
    let size = if p.size_step {
        let sold: Vec<usize> = (0..SIZE_COUNT)
            .filter(|&z| sells(target_item.sizes, z))
            .collect();
        // `sizes` is in 1..8, so at least one size is sold.
        sold.get(rng.random_range(0..sold.len().max(1))).copied()
    } else {
        None
    };
    let goal = Goal {
        kind: target_item.kind,
        colour: target_item.colour,
        size,
        max_price: (target_item.price + rng.random_range(0..2usize)).min(PRICES - 1),
    };
    let mut items = Vec::with_capacity(p.items);
    // Near misses first (same type and colour, rejected by price or size), then anything.
    let mut tries = 0;
    while items.len() + 1 < p.items && tries < 10_000 {
        tries += 1;
        let mut it = random_item(rng);
        if items.len() < 2 && rng.random_bool(0.5) {
            it.kind = goal.kind;
            it.colour = goal.colour;
        }
        if !goal.accepts(&it) {
            items.push(it);
        }
    }
    if items.len() + 1 < p.items {
        return Err(EnvError::NoTask {
            env: "tinyshop",
            split: Split::Train,
            tries,
        });
    }
    let target = rng.random_range(0..=items.len());
    items.insert(target, target_item);
    Ok(Task {
        items,
        goal,
        target,
        max_turns: p.max_turns,
    })
}

/// The page shown.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Page {
    Home,
    /// Results of the last query, from rank `offset`.
    Results {
        offset: usize,
    },
    /// Item page of catalogue item `item`, with the selected size.
    Item {
        item: usize,
        sel: Option<usize>,
    },
}

/// A TinyShop episode state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TinyShop {
    task: Task,
    page: Page,
    /// The last query (word tokens, as typed).
    query: Vec<TokenId>,
}

impl TinyShop {
    /// The initial state of `task`: the home page.
    pub fn new(task: Task) -> Self {
        Self {
            task,
            page: Page::Home,
            query: Vec::new(),
        }
    }

    /// Items sharing a word with the query, by shared words (desc.) then catalogue order.
    fn ranked(&self) -> Vec<usize> {
        let mut scored: Vec<(usize, usize)> = self
            .task
            .items
            .iter()
            .enumerate()
            .map(|(i, it)| {
                let kind = tok(TYPE0, it.kind);
                let colour = tok(COLOUR0, it.colour);
                let score = usize::from(self.query.contains(&kind))
                    + usize::from(self.query.contains(&colour));
                (i, score)
            })
            .filter(|&(_, s)| s > 0)
            .collect();
        scored.sort_by_key(|&(i, s)| (std::cmp::Reverse(s), i));
        scored.into_iter().map(|(i, _)| i).collect()
    }

    fn describe(&self, item: usize, o: &mut Vec<TokenId>) {
        if let Some(it) = self.task.items.get(item) {
            o.push(tok(COLOUR0, it.colour));
            o.push(tok(TYPE0, it.kind));
            o.push(tok(PRICE0, it.price));
        }
    }
}

impl Env for TinyShop {
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
        let g = &self.task.goal;
        let mut o = vec![GOAL, BUY, tok(COLOUR0, g.colour), tok(TYPE0, g.kind)];
        if let Some(z) = g.size {
            o.push(SIZE);
            o.push(tok(SIZE0, z));
        }
        o.push(MAX);
        o.push(tok(PRICE0, g.max_price));
        o
    }

    fn observe(&self) -> Vec<TokenId> {
        let mut o = vec![PAGE];
        match &self.page {
            Page::Home => o.push(HOME),
            Page::Results { offset } => {
                o.push(RESULTS);
                o.push(SEARCH);
                o.extend_from_slice(&self.query);
                let ranked = self.ranked();
                for (slot, &item) in ranked.iter().skip(*offset).take(PER_PAGE).enumerate() {
                    o.push(tok(SLOT0, slot));
                    self.describe(item, &mut o);
                }
                if ranked.len() > offset + PER_PAGE {
                    o.push(MORE);
                }
            }
            Page::Item { item, sel } => {
                o.push(ITEM);
                o.push(SEARCH);
                o.extend_from_slice(&self.query);
                self.describe(*item, &mut o);
                o.push(SIZES);
                if let Some(it) = self.task.items.get(*item) {
                    for z in 0..SIZE_COUNT {
                        if sells(it.sizes, z) {
                            o.push(tok(SIZE0, z));
                        }
                    }
                }
                o.push(SEL);
                o.push(sel.map_or(NONE, |z| tok(SIZE0, z)));
            }
        }
        o
    }

    fn admissible(&self, action: &[TokenId]) -> bool {
        let Some((&verb, args)) = action.split_first() else {
            return false;
        };
        match (verb, args, &self.page) {
            (SEARCH, words, _) => !words.is_empty(),
            (CLICK, [slot], Page::Results { offset }) => {
                index(*slot, SLOT0, PER_PAGE).is_some_and(|s| self.ranked().len() > offset + s)
            }
            (NEXT, [], Page::Results { offset }) => self.ranked().len() > offset + PER_PAGE,
            (BACK, [], Page::Item { .. } | Page::Results { .. }) => true,
            (SELECT, [z], Page::Item { item, .. }) => {
                match (index(*z, SIZE0, SIZE_COUNT), self.task.items.get(*item)) {
                    (Some(z), Some(it)) => sells(it.sizes, z),
                    _ => false,
                }
            }
            (BUY, [], Page::Item { .. }) => true,
            _ => false,
        }
    }

    fn box_clone(&self) -> Box<dyn Env> {
        Box::new(self.clone())
    }

    fn act(&mut self, action: &[TokenId]) -> Outcome {
        let Some((&verb, args)) = action.split_first() else {
            return Outcome::Continue(NO);
        };
        match (verb, args, &self.page) {
            (SEARCH, words, _) if !words.is_empty() => {
                self.query = words.to_vec();
                self.page = Page::Results { offset: 0 };
                Outcome::Continue(OK)
            }
            (CLICK, [slot], Page::Results { offset }) => {
                let Some(s) = index(*slot, SLOT0, PER_PAGE) else {
                    return Outcome::Continue(NO);
                };
                match self.ranked().get(offset + s) {
                    Some(&item) => {
                        self.page = Page::Item { item, sel: None };
                        Outcome::Continue(OK)
                    }
                    None => Outcome::Continue(NO),
                }
            }
            (NEXT, [], Page::Results { offset }) => {
                let offset = *offset;
                if self.ranked().len() > offset + PER_PAGE {
                    self.page = Page::Results {
                        offset: offset + PER_PAGE,
                    };
                    Outcome::Continue(OK)
                } else {
                    Outcome::Continue(NO)
                }
            }
            (BACK, [], Page::Item { .. }) => {
                self.page = Page::Results { offset: 0 };
                Outcome::Continue(OK)
            }
            (BACK, [], Page::Results { .. }) => {
                self.page = Page::Home;
                self.query.clear();
                Outcome::Continue(OK)
            }
            (SELECT, [z], Page::Item { item, .. }) => {
                let item = *item;
                match (index(*z, SIZE0, SIZE_COUNT), self.task.items.get(item)) {
                    (Some(z), Some(it)) if sells(it.sizes, z) => {
                        self.page = Page::Item { item, sel: Some(z) };
                        Outcome::Continue(OK)
                    }
                    _ => Outcome::Continue(NO),
                }
            }
            (BUY, [], Page::Item { item, sel }) => {
                let right_item = *item == self.task.target;
                let right_size = self.task.goal.size.is_none_or(|z| *sel == Some(z));
                if right_item && right_size {
                    Outcome::Win
                } else {
                    Outcome::Lose(OK)
                }
            }
            _ => Outcome::Continue(NO),
        }
    }
}

env_kind!(
    TinyShop,
    "tinyshop",
    split: |_| None,
    levels: [
            (
                "tinyshop-train",
                "TinyShop training level: 8 items, no size step, 10 turns; random valid 8.1%",
                Params::train(),
            ),
            (
                "tinyshop-hard",
                "TinyShop OOD level: 6 items, a size to select, 12 turns; random valid 1.6%",
                Params::hard(),
            ),
    ]
);
