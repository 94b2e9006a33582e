//! KeyRooms dynamics, admissible mask and split on hand-made worlds.

use aem::env::keyrooms::{self, held_out, CONTAINERS, OBJECTS};
use aem::env::{test_tasks, train_task, Episode, Level, PromptConfig, Split, Status, Task};

/// red (west) — blue (east); box in red holds the coin (and the key if `locked`); chest in
/// blue; goal: coin in chest.
fn world(locked: bool) -> Task {
    let mut container_room = [None; CONTAINERS];
    container_room[0] = Some(0); // box in red
    container_room[1] = Some(1); // chest in blue
    let mut object_at = [None; OBJECTS + 1];
    object_at[0] = Some(0); // coin in box
    object_at[1] = Some(1); // cup in chest
    if locked {
        object_at[OBJECTS] = Some(0); // key in box
    }
    Task::KeyRooms(keyrooms::Task {
        room_colour: vec![0, 1],
        container_room,
        object_at,
        locked_door: locked.then_some(0),
        goal: (0, 1),
        max_turns: 6,
    })
}

fn run(ep: &mut Episode, text: &str) -> String {
    let r = ep.vocab().encode(text).unwrap();
    let s = ep.step(&r);
    ep.vocab().decode(&s.feedback)
}

fn names(ep: &Episode, prefix: &str) -> Vec<&'static str> {
    let p = ep.vocab().encode(prefix).unwrap();
    ep.valid_next(&p)
        .iter()
        .map(|t| ep.vocab().token(t).unwrap())
        .collect()
}

#[test]
fn containers_take_put_win() {
    let mut e = Episode::new(&world(false), PromptConfig::default());
    assert_eq!(
        e.prompt_text(),
        "<bos> goal coin chest room red exits blue see box shut hold none"
    );
    assert_eq!(run(&mut e, "take coin end"), "no");
    assert_eq!(
        run(&mut e, "open box ; take coin ; go blue end"),
        "ok ok ok"
    );
    assert_eq!(
        e.observation_text(),
        "room blue exits red see chest shut hold coin"
    );
    assert_eq!(run(&mut e, "put coin chest end"), "no");
    assert_eq!(
        run(&mut e, "open chest ; put coin chest ; go red end"),
        "ok win"
    );
    assert_eq!(e.status(), Status::Won);
    assert_eq!(e.reward(), 1.0);
}

#[test]
fn wrong_put_is_not_a_win() {
    let mut e = Episode::new(&world(false), PromptConfig::default());
    assert_eq!(
        run(&mut e, "open box ; take coin ; put coin box end"),
        "ok ok ok"
    );
    assert_eq!(
        e.observation_text(),
        "room red exits blue see box open coin hold none"
    );
    assert!(!e.done());
}

#[test]
fn locked_door_and_key() {
    let mut e = Episode::new(&world(true), PromptConfig::default());
    assert_eq!(
        e.observation_text(),
        "room red exits blue locked see box shut hold none"
    );
    assert_eq!(run(&mut e, "go blue end"), "locked");
    assert_eq!(run(&mut e, "go green ; open box end"), "no ok");
    assert_eq!(
        e.observation_text(),
        "room red exits blue locked see box open coin key hold none"
    );
    assert_eq!(run(&mut e, "take key ; go blue ; go red end"), "ok ok ok");
    // The key stayed in the lock; the door is open for good.
    assert_eq!(
        e.observation_text(),
        "room red exits blue see box open coin hold none"
    );
    assert_eq!(
        run(&mut e, "take coin ; go blue ; open chest end"),
        "ok ok ok"
    );
    assert_eq!(run(&mut e, "put coin chest end"), "win");
}

#[test]
fn admissible_mask_follows_the_simulated_state() {
    let e = Episode::new(&world(true), PromptConfig::default());
    assert_eq!(names(&e, ""), ["open"]); // door locked, nothing visible, hand empty
    assert_eq!(names(&e, "open"), ["box"]);
    assert_eq!(names(&e, "open box"), ["end", ";"]);
    assert_eq!(names(&e, "open box ;"), ["take"]);
    assert_eq!(names(&e, "open box ; take"), ["coin", "key"]);
    assert_eq!(names(&e, "open box ; take key ;"), ["go", "put"]);
    assert_eq!(names(&e, "open box ; take key ; go"), ["blue"]);
    // The grammar mask does not look at the state.
    let g = e.grammar().valid_next(&[]);
    assert_eq!(g.count(), 4);
}

#[test]
fn canonical_observations() {
    let mut a = Episode::new(&world(false), PromptConfig::default());
    let mut b = Episode::new(&world(false), PromptConfig::default());
    run(&mut a, "open box ; go blue end");
    run(&mut b, "go blue ; go red ; open box end");
    run(&mut b, "go blue end");
    assert_eq!(a.observation_bytes(), b.observation_bytes());
    // What is held is part of the observation.
    let mut c = Episode::new(&world(false), PromptConfig::default());
    run(&mut c, "open box ; take coin ; go blue end");
    assert_ne!(a.observation_bytes(), c.observation_bytes());
}

#[test]
fn goal_pairs_split() {
    let held: Vec<(usize, usize)> = (0..OBJECTS)
        .flat_map(|o| (0..CONTAINERS).map(move |k| (o, k)))
        .filter(|&(o, k)| held_out(o, k))
        .collect();
    assert_eq!(held.len(), 4); // 20% of 20 pairs
    for name in ["keyrooms-train", "keyrooms-hard"] {
        let lv = aem::env::level(name).unwrap();
        for s in 0..300 {
            let Task::KeyRooms(t) = train_task(&lv, s).unwrap() else {
                unreachable!()
            };
            assert!(!held_out(t.goal.0, t.goal.1));
        }
        for t in test_tasks(&lv, 200).unwrap() {
            let Task::KeyRooms(k) = &t else {
                unreachable!()
            };
            assert!(held_out(k.goal.0, k.goal.1));
            assert_eq!(t.split(), Split::Test);
        }
    }
}

#[test]
fn generated_worlds_are_well_formed() {
    let lv = Level::KeyRooms(keyrooms::Params::hard());
    for s in 0..500 {
        let Task::KeyRooms(t) = lv.generate(s).unwrap() else {
            unreachable!()
        };
        let d = t.locked_door.unwrap();
        let key = t.object_at[OBJECTS].unwrap();
        assert!(t.container_room[key].unwrap() <= d, "key beyond its door");
        assert_ne!(t.object_at[t.goal.0], Some(t.goal.1), "goal already met");
        for r in 0..t.room_colour.len() {
            assert!(
                t.container_room.contains(&Some(r)),
                "room without container"
            );
        }
    }
}
