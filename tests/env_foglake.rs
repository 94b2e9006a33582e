//! FogLake dynamics, observations and prompts on hand-made maps.

use aem::env::foglake::{self, GoalView};
use aem::env::{Episode, MaskMode, PromptConfig, Status, Task};

/// 5×5, start (0,0), goal (2,3), holes at (0,3) and (1,1):
/// ```text
/// @ . . O .
/// . O . . .
/// . . . G .
/// . . . . .
/// . . . . .
/// ```
fn map(goal_view: GoalView) -> Task {
    let mut holes = vec![false; 25];
    holes[3] = true;
    holes[5 + 1] = true;
    Task::FogLake(foglake::Task {
        size: 5,
        holes,
        start: (0, 0),
        goal: (2, 3),
        max_turns: 5,
        goal_view,
    })
}

fn ep(goal_view: GoalView) -> Episode {
    Episode::new(&map(goal_view), PromptConfig::default())
}

fn run(ep: &mut Episode, text: &str) -> (String, bool, f32) {
    let r = ep.vocab().encode(text).unwrap();
    let s = ep.step(&r);
    (ep.vocab().decode(&s.feedback), s.done, s.reward)
}

#[test]
fn prototype_prompt_is_14_tokens() {
    let e = ep(GoalView::Always);
    assert_eq!(e.prompt_text(), "<bos> goal r+2 c+3 view # # # # @ . # . O");
    assert_eq!(e.prompt().len(), 14);
}

#[test]
fn moves_walls_and_goal() {
    let mut e = ep(GoalView::Always);
    assert_eq!(run(&mut e, "n end"), ("wall".into(), false, 0.0));
    assert_eq!(
        run(&mut e, "s ; s ; e end"),
        ("ok ok ok".into(), false, 0.0)
    );
    assert_eq!(e.observation_text(), "goal r+0 c+2 view . O . . @ . . . .");
    assert_eq!(run(&mut e, "e ; e ; e end"), ("ok win".into(), true, 1.0));
    assert_eq!(e.status(), Status::Won);
    // After the end nothing changes.
    let r = e.step(&e.vocab().encode("e end").unwrap());
    assert!(r.done && r.feedback.is_empty() && r.reward == 0.0);
    assert_eq!(e.turn(), 3);
}

#[test]
fn hole_ends_the_episode_and_skips_the_rest() {
    let mut e = ep(GoalView::Always);
    let r = e.step(&e.vocab().encode("e ; s ; e end").unwrap());
    assert_eq!(e.vocab().decode(&r.feedback), "ok hole");
    assert_eq!(r.actions_run, 2);
    assert!(r.done && r.reward == 0.0);
    assert_eq!(e.status(), Status::Lost);
}

#[test]
fn turn_limit_ends_with_zero() {
    let mut e = ep(GoalView::Always);
    for t in 0..5 {
        let (_, done, rew) = run(&mut e, "w end");
        assert_eq!(done, t == 4);
        assert_eq!(rew, 0.0);
    }
    assert_eq!(e.status(), Status::Lost);
}

#[test]
fn hidden_goal_shows_once_seen() {
    let mut e = ep(GoalView::WhenSeen);
    assert!(e.observation_text().starts_with("goal r? c? view"));
    run(&mut e, "s ; s end");
    assert!(e.observation_text().starts_with("goal r? c? view"));
    run(&mut e, "e ; e end"); // (2,2): goal adjacent
    assert!(e.observation_text().starts_with("goal r+0 c+1 view"));
    run(&mut e, "w ; w end"); // out of view again: still known
    assert!(e.observation_text().starts_with("goal r+0 c+3 view"));
}

#[test]
fn equal_states_give_equal_observations() {
    let mut a = ep(GoalView::Always);
    let mut b = ep(GoalView::Always);
    run(&mut a, "s ; s ; e end");
    run(&mut b, "n end");
    run(&mut b, "s end");
    run(&mut b, "s ; e end");
    assert_eq!(a.observation_bytes(), b.observation_bytes());
    assert_eq!(a.observation(), b.observation());
    // Different cell, different observation.
    run(&mut b, "e end");
    assert_ne!(a.observation_bytes(), b.observation_bytes());
}

#[test]
fn history_in_prompt() {
    for k in 0..=2usize {
        let mut e = Episode::new(
            &map(GoalView::Always),
            PromptConfig {
                history: k,
                mask: MaskMode::Admissible,
            },
        );
        run(&mut e, "n end");
        run(&mut e, "s");
        run(&mut e, "s ; s end");
        let p = e.prompt_text();
        let want = match k {
            0 => "<bos> goal r+0 c+3",
            1 => "<bos> did s ; s got ok ok goal r+0 c+3",
            _ => "<bos> did got bad did s ; s got ok ok goal r+0 c+3",
        };
        assert!(p.starts_with(want), "k={k}: {p}");
    }
}

#[test]
fn oracle_path() {
    let Task::FogLake(t) = map(GoalView::Always) else {
        unreachable!()
    };
    assert_eq!(t.shortest_path().unwrap().len(), 5);
    assert!(t.oracle_solves());
}

#[test]
fn mask_allows_every_move() {
    let e = ep(GoalView::Always);
    let v = e.vocab();
    let m = e.valid_next(&[]);
    let names: Vec<_> = m.iter().map(|t| v.token(t).unwrap()).collect();
    assert_eq!(names, ["n", "s", "e", "w"]);
    let m = e.valid_next(&v.encode("n ; e").unwrap());
    let names: Vec<_> = m.iter().map(|t| v.token(t).unwrap()).collect();
    assert_eq!(names, ["end", ";"]);
    let m = e.valid_next(&v.encode("n ; e ; w").unwrap());
    assert_eq!(
        m.iter().map(|t| v.token(t).unwrap()).collect::<Vec<_>>(),
        ["end"]
    );
    // A move into the hole ends the episode: only `end` may follow it.
    let m = e.valid_next(&v.encode("e ; s").unwrap());
    assert_eq!(
        m.iter().map(|t| v.token(t).unwrap()).collect::<Vec<_>>(),
        ["end"]
    );
}
