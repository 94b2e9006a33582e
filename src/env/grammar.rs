//! The response grammar `action (; action){0,M-1} end` as a small automaton.
//!
//! An action is one of a list of templates; a template is a sequence of slots and a slot
//! is a [`TokenMask`] of allowed words (e.g. KeyRooms `put` = `[{put}, {objects}, {containers}]`).
//! The grammar depends only on the env, never on the state: [`Grammar::valid_next`] is the
//! *grammar mask*. [`super::Episode::valid_next`] narrows it to admissible actions (the
//! *admissible mask*, the default; see [`super::MaskMode`]).
//!
//! **Uniformly random valid policy** (used by every rate in the env tests and docs): at each
//! decoding step, pick uniformly among the tokens the mask allows, until `end`
//! ([`sample_uniform_with`]). This is what a masked model with uniform logits samples. So after
//! a complete action `;` and `end` are equally likely (1 action w.p. 1/2, 2 w.p. 1/4, 3 w.p. 1/4
//! when M = 3), and the first word of an action is uniform over the allowed verbs.

use rand::Rng;

use super::vocab::{TokenId, TokenMask, END, PAD, SEP};

/// Why a response did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No tokens (after stripping trailing padding).
    #[error("empty response")]
    Empty,
    /// Token `token` at position `at` is not allowed there.
    #[error("token {token} not allowed at position {at}")]
    Unexpected { at: usize, token: TokenId },
    /// The response stopped before `end`.
    #[error("response does not finish with `end`")]
    Unfinished,
}

/// An action grammar: templates of slots, at most `max_actions` actions per response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grammar {
    templates: Vec<Vec<TokenMask>>,
    max_actions: usize,
}

/// Automaton state after a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Inside action number `done + 1`; `pos` tokens of it read; `alive` = bit set of templates
    /// consistent with them.
    In { done: usize, pos: usize, alive: u64 },
    /// `end` was read.
    Finished,
}

impl Grammar {
    /// A grammar over `templates` (at most 64, each non-empty) with 1..=`max_actions` actions.
    pub(crate) fn new(templates: Vec<Vec<TokenMask>>, max_actions: usize) -> Self {
        let mut templates = templates;
        templates.retain(|t| !t.is_empty());
        templates.truncate(64);
        Self {
            templates,
            max_actions: max_actions.max(1),
        }
    }

    /// Most actions in one response.
    pub fn max_actions(&self) -> usize {
        self.max_actions
    }

    /// Longest grammatical response, `end` included.
    pub fn max_response_len(&self) -> usize {
        let longest = self.templates.iter().map(Vec::len).max().unwrap_or(0);
        self.max_actions * longest + self.max_actions
    }

    fn all_alive(&self) -> u64 {
        if self.templates.len() >= 64 {
            u64::MAX
        } else {
            (1u64 << self.templates.len()) - 1
        }
    }

    /// Whether some alive template is complete after `pos` tokens.
    fn complete(&self, pos: usize, alive: u64) -> bool {
        pos > 0
            && self
                .templates
                .iter()
                .enumerate()
                .any(|(i, t)| alive & (1u64 << i) != 0 && t.len() == pos)
    }

    fn start(&self) -> State {
        State::In {
            done: 0,
            pos: 0,
            alive: self.all_alive(),
        }
    }

    /// One transition; `None` if `tok` is not allowed.
    fn advance(&self, state: State, tok: TokenId) -> Option<State> {
        let State::In { done, pos, alive } = state else {
            return None;
        };
        if self.complete(pos, alive) {
            if tok == END {
                return Some(State::Finished);
            }
            if tok == SEP && done + 1 < self.max_actions {
                return Some(State::In {
                    done: done + 1,
                    pos: 0,
                    alive: self.all_alive(),
                });
            }
        }
        let mut next = 0u64;
        for (i, t) in self.templates.iter().enumerate() {
            if alive & (1u64 << i) != 0 && t.get(pos).is_some_and(|slot| slot.contains(tok)) {
                next |= 1u64 << i;
            }
        }
        (next != 0).then_some(State::In {
            done,
            pos: pos + 1,
            alive: next,
        })
    }

    fn run(&self, prefix: &[TokenId]) -> Result<State, ParseError> {
        let mut s = self.start();
        for (at, &tok) in prefix.iter().enumerate() {
            s = self
                .advance(s, tok)
                .ok_or(ParseError::Unexpected { at, token: tok })?;
        }
        Ok(s)
    }

    /// Templates consistent with `partial` (tokens of one action, no separators).
    fn alive_for(&self, partial: &[TokenId]) -> u64 {
        let mut alive = 0u64;
        for (i, t) in self.templates.iter().enumerate() {
            if t.len() >= partial.len()
                && partial.iter().zip(t).all(|(tok, slot)| slot.contains(*tok))
            {
                alive |= 1u64 << i;
            }
        }
        alive
    }

    /// Whether `partial` is one complete action.
    pub fn is_action(&self, partial: &[TokenId]) -> bool {
        self.complete(partial.len(), self.alive_for(partial))
    }

    /// Tokens that continue the action `partial` (no `;` or `end`).
    pub fn action_next(&self, partial: &[TokenId]) -> TokenMask {
        let alive = self.alive_for(partial);
        let mut m = TokenMask::EMPTY;
        for (i, t) in self.templates.iter().enumerate() {
            if alive & (1u64 << i) != 0 {
                if let Some(slot) = t.get(partial.len()) {
                    m = m.union(*slot);
                }
            }
        }
        m
    }

    /// The tokens allowed after `prefix` (the response so far). Empty once `end` was read or
    /// if `prefix` is itself ungrammatical.
    pub fn valid_next(&self, prefix: &[TokenId]) -> TokenMask {
        match self.run(prefix) {
            Ok(State::In { done, pos, alive }) => {
                let mut m = TokenMask::EMPTY;
                for (i, t) in self.templates.iter().enumerate() {
                    if alive & (1u64 << i) != 0 {
                        if let Some(slot) = t.get(pos) {
                            m = m.union(*slot);
                        }
                    }
                }
                if self.complete(pos, alive) {
                    m.insert(END);
                    if done + 1 < self.max_actions {
                        m.insert(SEP);
                    }
                }
                m
            }
            Ok(State::Finished) | Err(_) => TokenMask::EMPTY,
        }
    }

    /// Splits a complete response into its actions (each without separators). Trailing
    /// [`PAD`] tokens are ignored; anything else after `end` is an error.
    pub fn parse(&self, response: &[TokenId]) -> Result<Vec<Vec<TokenId>>, ParseError> {
        let mut n = response.len();
        while n > 0 && response[n - 1] == PAD {
            n -= 1;
        }
        let response = &response[..n];
        if response.is_empty() {
            return Err(ParseError::Empty);
        }
        match self.run(response)? {
            State::Finished => {}
            State::In { .. } => return Err(ParseError::Unfinished),
        }
        let body = &response[..response.len() - 1];
        Ok(body.split(|&t| t == SEP).map(<[TokenId]>::to_vec).collect())
    }

    /// One response of the uniformly random policy under this (state-independent) grammar.
    pub fn sample_uniform<R: Rng + ?Sized>(&self, rng: &mut R) -> Vec<TokenId> {
        sample_uniform_with(self.max_response_len(), |p| self.valid_next(p), rng)
    }
}

/// One response of the uniformly random policy under the mask `valid_next` (prefix → allowed
/// next tokens): uniform over the allowed tokens at each step, until `end` or `max_len`.
pub fn sample_uniform_with<R: Rng + ?Sized>(
    max_len: usize,
    valid_next: impl Fn(&[TokenId]) -> TokenMask,
    rng: &mut R,
) -> Vec<TokenId> {
    let mut out = Vec::new();
    for _ in 0..max_len {
        let m = valid_next(&out);
        let Some(tok) = m.nth(rng.random_range(0..m.count().max(1))) else {
            break;
        };
        out.push(tok);
        if tok == END {
            break;
        }
    }
    out
}
