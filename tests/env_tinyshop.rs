//! TinyShop pages, search ranking, size step and the terminal `buy`.

use aem::env::tinyshop::{self, Goal, Item};
use aem::env::{Episode, PromptConfig, Status, Task};

/// Four items; the goal (red shirt, size m, max p3) accepts only item 0.
fn shop(size_step: bool) -> Task {
    let it = |kind, colour, sizes, price| Item {
        kind,
        colour,
        sizes,
        price,
    };
    Task::TinyShop(tinyshop::Task {
        items: vec![
            it(0, 0, 0b011, 1), // red shirt s m p2
            it(0, 0, 0b100, 3), // red shirt l p4 (too expensive)
            it(0, 1, 0b010, 0), // blue shirt m p1
            it(1, 0, 0b111, 0), // red hat p1
        ],
        goal: Goal {
            kind: 0,
            colour: 0,
            size: size_step.then_some(1),
            max_price: 2,
        },
        target: 0,
        max_turns: 10,
    })
}

fn run(ep: &mut Episode, text: &str) -> String {
    let r = ep.vocab().encode(text).unwrap();
    let s = ep.step(&r);
    ep.vocab().decode(&s.feedback)
}

#[test]
fn pages_and_navigation() {
    let mut e = Episode::new(&shop(true), PromptConfig::default());
    assert_eq!(
        e.prompt_text(),
        "<bos> goal buy red shirt size m max p3 page home"
    );
    assert_eq!(run(&mut e, "back ; buy ; click i1 end"), "no no no");
    assert_eq!(run(&mut e, "search red shirt end"), "ok");
    assert_eq!(
        e.observation_text(),
        "page results search red shirt i1 red shirt p2 i2 red shirt p4 i3 blue shirt p1 more"
    );
    assert_eq!(run(&mut e, "next ; next end"), "ok no");
    assert_eq!(
        e.observation_text(),
        "page results search red shirt i1 red hat p1"
    );
    assert_eq!(run(&mut e, "click i2 ; click i1 end"), "no ok");
    assert_eq!(
        e.observation_text(),
        "page item search red shirt red hat p1 sizes s m l sel none"
    );
    assert_eq!(run(&mut e, "back ; click i1 ; select l end"), "ok ok no");
    assert_eq!(
        e.observation_text(),
        "page item search red shirt red shirt p2 sizes s m sel none"
    );
    assert_eq!(run(&mut e, "select m ; back ; back end"), "ok ok ok");
    assert_eq!(e.observation_text(), "page home");
    assert!(!e.done());
    assert_eq!(e.turn(), 6);
}

#[test]
fn buy_needs_the_size_and_is_terminal() {
    let mut e = Episode::new(&shop(true), PromptConfig::default());
    assert_eq!(run(&mut e, "search shirt ; click i1 ; buy end"), "ok ok ok");
    assert_eq!(e.status(), Status::Lost);
    assert!(e.done());

    let mut e = Episode::new(&shop(true), PromptConfig::default());
    assert_eq!(
        run(&mut e, "search shirt red ; click i1 ; select m end"),
        "ok ok ok"
    );
    assert_eq!(run(&mut e, "buy ; back end"), "win");
    assert_eq!(e.reward(), 1.0);

    // Without a size step the right item suffices.
    let mut e = Episode::new(&shop(false), PromptConfig::default());
    assert_eq!(
        run(&mut e, "search red shirt ; click i1 ; buy end"),
        "ok ok win"
    );
}

#[test]
fn admissible_mask_by_page() {
    let e = Episode::new(&shop(true), PromptConfig::default());
    let v = e.vocab();
    let names = |p: &str| -> Vec<&str> {
        e.valid_next(&v.encode(p).unwrap())
            .iter()
            .map(|t| v.token(t).unwrap())
            .collect()
    };
    assert_eq!(names(""), ["search"]);
    assert_eq!(names("search hat ;"), ["search", "click", "back"]); // one result: no `next`
    assert_eq!(names("search hat ; click"), ["i1"]);
    assert_eq!(
        names("search hat ; click i1 ;"),
        ["search", "back", "select", "buy"]
    );
    assert_eq!(names("search hat ; click i1 ; buy"), ["end"]); // terminal
    assert_eq!(
        names("search red"),
        ["end", ";", "shirt", "hat", "shoe", "bag", "red", "blue", "green", "black"]
    );
}

#[test]
fn generated_shops_have_one_answer() {
    for name in ["tinyshop-train", "tinyshop-hard"] {
        let lv = aem::env::level(name).unwrap();
        for s in 0..500 {
            let Task::TinyShop(t) = lv.generate(s).unwrap() else {
                unreachable!()
            };
            let ok: Vec<usize> = (0..t.items.len())
                .filter(|&i| t.goal.accepts(&t.items[i]))
                .collect();
            assert_eq!(ok, [t.target]);
        }
    }
}
