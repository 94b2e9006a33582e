//! Shared machinery: vocabularies, the grammar, malformed responses, determinism, the split.

use std::collections::HashSet;

use aem::env::vocab::{BAD, SHARED};
use aem::env::{
    foglake, keyrooms, level, levels, test_tasks, tinyshop, train_task, Episode, MaskMode,
    PromptConfig, Split, TokenId,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[test]
fn vocabularies_are_small_unique_and_share_a_prefix() {
    for l in levels() {
        let v = l.level.vocab();
        assert!(v.len() < 64, "{}", v.name());
        assert_eq!(&v.tokens()[..SHARED.len()], &SHARED[..]);
        let uniq: HashSet<_> = v.tokens().iter().collect();
        assert_eq!(uniq.len(), v.len(), "{}: duplicate token", v.name());
        let text = v.tokens().join(" ");
        let ids = v.encode(&text).unwrap();
        assert_eq!(ids, (0..v.len() as TokenId).collect::<Vec<_>>());
        assert_eq!(v.decode(&ids), text);
        assert!(v.encode("nonsense").is_err());
        assert_eq!(v.decode(&[999]), "<unk>");
    }
    assert_eq!(foglake::VOCAB.len(), 51);
    assert_eq!(keyrooms::VOCAB.len(), 36);
    assert_eq!(tinyshop::VOCAB.len(), 45);
}

#[test]
fn named_ids_match_the_tables() {
    let f = &foglake::VOCAB;
    for (id, s) in [
        (foglake::VIEW, "view"),
        (foglake::N, "n"),
        (foglake::W, "w"),
        (foglake::HOLE, "hole"),
        (foglake::R_MINUS6, "r-6"),
        (foglake::R_MINUS6 + 8, "r+2"),
        (foglake::C_MINUS6, "c-6"),
        (foglake::C_MINUS6 + 12, "c+6"),
    ] {
        assert_eq!(f.id(s), Some(id), "{s}");
    }
    let k = &keyrooms::VOCAB;
    for (id, s) in [
        (keyrooms::ROOM, "room"),
        (keyrooms::LOCKED, "locked"),
        (keyrooms::COLOUR0, "red"),
        (keyrooms::CONTAINER0, "box"),
        (keyrooms::OBJECT0, "coin"),
        (keyrooms::KEY, "key"),
    ] {
        assert_eq!(k.id(s), Some(id), "{s}");
    }
    let t = &tinyshop::VOCAB;
    for (id, s) in [
        (tinyshop::PAGE, "page"),
        (tinyshop::MORE, "more"),
        (tinyshop::SLOT0, "i1"),
        (tinyshop::TYPE0, "shirt"),
        (tinyshop::COLOUR0, "red"),
        (tinyshop::SIZE0, "s"),
        (tinyshop::PRICE0, "p1"),
        (tinyshop::PRICE0 + 3, "p4"),
    ] {
        assert_eq!(t.id(s), Some(id), "{s}");
    }
}

#[test]
fn malformed_responses_waste_the_turn() {
    let task = train_task(&level("foglake-proto").unwrap(), 7).unwrap();
    let v = &foglake::VOCAB;
    let cases: Vec<Vec<TokenId>> = vec![
        vec![],
        v.encode("end").unwrap(),
        v.encode("n n end").unwrap(),
        v.encode("n ; end").unwrap(),
        v.encode("; n end").unwrap(),
        v.encode("n ; n ; n ; n end").unwrap(),
        v.encode("n ; e").unwrap(),
        v.encode("n end n").unwrap(),
        v.encode("n end end").unwrap(),
        v.encode("<bos> n end").unwrap(),
        v.encode("goal end").unwrap(),
        vec![17, 999, 2],
        vec![u32::MAX],
        v.encode("<pad> n end").unwrap(),
    ];
    for c in &cases {
        let mut e = Episode::new(&task, PromptConfig::default());
        let obs = e.observation();
        let r = e.step(c);
        assert_eq!(r.feedback, [BAD], "{c:?}");
        assert!(!r.parsed && r.actions_run == 0 && !r.done);
        assert_eq!(e.turn(), 1);
        assert_eq!(e.observation(), obs);
    }
    // Trailing padding is fine.
    let mut e = Episode::new(&task, PromptConfig::default());
    assert!(e.step(&v.encode("n end <pad> <pad>").unwrap()).parsed);
}

#[test]
fn random_token_soup_never_panics() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for l in levels() {
        for s in 0..40 {
            let task = train_task(&l.level, s).unwrap();
            let mut e = Episode::new(
                &task,
                PromptConfig {
                    history: 2,
                    mask: MaskMode::Admissible,
                },
            );
            while !e.done() {
                let n = rng.random_range(0..12);
                let r: Vec<TokenId> = (0..n).map(|_| rng.random_range(0..70)).collect();
                e.step(&r);
                e.prompt();
                e.valid_next(&r);
            }
        }
    }
}

#[test]
fn masked_samples_always_parse_and_fit() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for l in levels() {
        for mask in [MaskMode::Grammar, MaskMode::Admissible] {
            for s in 0..100 {
                let task = train_task(&l.level, s).unwrap();
                let mut e = Episode::new(&task, PromptConfig { history: 1, mask });
                while !e.done() {
                    let r = e.sample_uniform(&mut rng);
                    assert!(r.len() <= e.grammar().max_response_len());
                    // Every prefix's token was allowed, and nothing follows `end`.
                    for i in 0..r.len() {
                        assert!(e.valid_next(&r[..i]).contains(r[i]));
                    }
                    assert!(e.valid_next(&r).is_empty());
                    assert!(e.step(&r).parsed, "{}: {}", l.name, e.vocab().decode(&r));
                }
            }
        }
    }
}

/// The prompts of one episode of the seeded random valid policy.
fn trajectory(name: &str, task_seed: u64, policy_seed: u64) -> Vec<Vec<TokenId>> {
    let task = train_task(&level(name).unwrap(), task_seed).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(policy_seed);
    let mut e = Episode::new(
        &task,
        PromptConfig {
            history: 2,
            mask: MaskMode::Admissible,
        },
    );
    let mut out = vec![e.prompt()];
    while !e.done() {
        let r = e.sample_uniform(&mut rng);
        e.step(&r);
        out.push(e.prompt());
    }
    out
}

#[test]
fn deterministic_from_seeds() {
    for l in levels() {
        for s in 0..50 {
            assert_eq!(l.level.generate(s).unwrap(), l.level.generate(s).unwrap());
            assert_eq!(
                train_task(&l.level, s).unwrap(),
                train_task(&l.level, s).unwrap()
            );
            assert_eq!(trajectory(l.name, s, 9), trajectory(l.name, s, 9));
        }
        let distinct: HashSet<u64> = (0..50)
            .map(|s| l.level.generate(s).unwrap().hash())
            .collect();
        assert!(distinct.len() > 40, "{}: seeds give the same tasks", l.name);
        assert_eq!(
            test_tasks(&l.level, 50).unwrap(),
            test_tasks(&l.level, 50).unwrap()
        );
    }
}

#[test]
fn split_is_disjoint_and_deduplicated() {
    for l in levels() {
        let test = test_tasks(&l.level, 512).unwrap();
        let test_hashes: HashSet<u64> = test.iter().map(|t| t.hash()).collect();
        assert_eq!(test_hashes.len(), 512, "{}: duplicate test tasks", l.name);
        assert!(test.iter().all(|t| t.split() == Split::Test));
        for s in 0..3000 {
            let t = train_task(&l.level, s).unwrap();
            assert_eq!(t.split(), Split::Train);
            assert!(
                !test_hashes.contains(&t.hash()),
                "{}: train seed {s} is a test task",
                l.name
            );
        }
    }
}

#[test]
fn bad_params_are_errors() {
    use aem::env::Level;
    let mut p = foglake::Params::proto();
    p.size = 9;
    assert!(Level::FogLake(p).generate(0).is_err());
    let mut p = foglake::Params::proto();
    p.min_dist = 30;
    p.max_dist = 40;
    assert!(Level::FogLake(p).generate(0).is_err());
    let mut p = keyrooms::Params::hard();
    p.rooms = 1;
    assert!(Level::KeyRooms(p).generate(0).is_err());
    let mut p = tinyshop::Params::train();
    p.items = 40;
    assert!(Level::TinyShop(p).generate(0).is_err());
    assert!(level("nope").is_err());
    assert!(level("foglake-train").is_ok());
}
