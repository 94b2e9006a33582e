//! Fixed token tables, one per environment, and a 64-bit token mask.
//!
//! Every environment has its own [`Vocab`] of fewer than 64 tokens; the first
//! [`SHARED`]`.len()` ids are the same in all of them (padding, `<bos>`, the response
//! terminator `end`, the action separator `;`, the history markers `did`/`got`, and the
//! feedback words `bad`/`ok`/`no`/`win` plus `goal`). The rest are listed in each env's
//! module; ids are the position in the table and never change.

use super::EnvError;

/// A token id: an index into one env's [`Vocab`] table (always `< 64`).
pub type TokenId = u32;

/// Tokens shared by every vocabulary, at ids 0..=10.
pub const SHARED: [&str; 11] = [
    "<pad>", "<bos>", "end", ";", "did", "got", "bad", "ok", "no", "win", "goal",
];
/// Padding; never produced by an env, stripped from the end of a response.
pub const PAD: TokenId = 0;
/// First token of every prompt.
pub const BOS: TokenId = 1;
/// Terminates a response.
pub const END: TokenId = 2;
/// Separates actions in a response.
pub const SEP: TokenId = 3;
/// History marker: the actions of a past turn follow.
pub const DID: TokenId = 4;
/// History marker: the feedback of a past turn follows.
pub const GOT: TokenId = 5;
/// Feedback: the response did not parse; the turn was wasted.
pub const BAD: TokenId = 6;
/// Feedback: the action did what it says.
pub const OK: TokenId = 7;
/// Feedback: the action was grammatical but not applicable here (nothing changed).
pub const NO: TokenId = 8;
/// Feedback: the action solved the task (episode ends with reward 1).
pub const WIN: TokenId = 9;
/// Starts the goal description.
pub const GOAL: TokenId = 10;

/// A fixed table of token strings; the id of a token is its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vocab {
    name: &'static str,
    tokens: &'static [&'static str],
}

impl Vocab {
    /// A vocabulary over `tokens`, whose first entries must be [`SHARED`] (checked by tests).
    pub(crate) const fn new(name: &'static str, tokens: &'static [&'static str]) -> Self {
        Self { name, tokens }
    }

    /// The env this vocabulary belongs to.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Number of tokens (the model's vocabulary size V).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Always false; present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// All token strings, indexed by id.
    pub fn tokens(&self) -> &'static [&'static str] {
        self.tokens
    }

    /// The id of a token string.
    pub fn id(&self, token: &str) -> Option<TokenId> {
        self.tokens
            .iter()
            .position(|t| *t == token)
            .and_then(|i| TokenId::try_from(i).ok())
    }

    /// The string of a token id.
    pub fn token(&self, id: TokenId) -> Option<&'static str> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.tokens.get(i).copied())
    }

    /// Whitespace-separated text to ids; an unknown word is an error.
    pub fn encode(&self, text: &str) -> Result<Vec<TokenId>, EnvError> {
        text.split_whitespace()
            .map(|w| {
                self.id(w).ok_or_else(|| EnvError::UnknownToken {
                    vocab: self.name,
                    token: w.to_string(),
                })
            })
            .collect()
    }

    /// Ids to whitespace-separated text; an id outside the table decodes as `<unk>`.
    pub fn decode(&self, ids: &[TokenId]) -> String {
        let mut out = String::new();
        for (i, &id) in ids.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(self.token(id).unwrap_or("<unk>"));
        }
        out
    }
}

/// A set of token ids of one vocabulary (bit `i` = token `i`; vocabularies have < 64 tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct TokenMask(pub u64);

impl TokenMask {
    /// The empty set.
    pub const EMPTY: TokenMask = TokenMask(0);

    /// The set of the given ids (ids >= 64 are ignored).
    pub fn of(ids: &[TokenId]) -> Self {
        let mut m = TokenMask::EMPTY;
        for &id in ids {
            m.insert(id);
        }
        m
    }

    /// Adds `id` (ignored if >= 64).
    pub fn insert(&mut self, id: TokenId) {
        if id < 64 {
            self.0 |= 1u64 << id;
        }
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: TokenId) -> bool {
        id < 64 && self.0 & (1u64 << id) != 0
    }

    /// Number of ids in the set.
    pub fn count(&self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// Set union.
    pub fn union(self, other: TokenMask) -> TokenMask {
        TokenMask(self.0 | other.0)
    }

    /// The ids in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = TokenId> + '_ {
        let bits = self.0;
        (0..64u32).filter(move |i| bits & (1u64 << i) != 0)
    }

    /// The `k`-th id in increasing order, if any.
    pub fn nth(&self, k: usize) -> Option<TokenId> {
        self.iter().nth(k)
    }

    /// As a dense boolean vector of length `v` (for logits masking).
    pub fn to_bools(&self, v: usize) -> Vec<bool> {
        (0..v)
            .map(|i| u32::try_from(i).is_ok_and(|i| self.contains(i)))
            .collect()
    }
}
