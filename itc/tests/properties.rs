//! Property tests of the paper's laws, checked against an independent
//! reading of ids and event trees as functions on a grid of cells.

mod common;

use common::*;
use proptest::prelude::*;
use rederive_itc::{Event, Id, Stamp};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_result_is_normalized(ops in ops(40)) {
        for s in run(&ops).history {
            prop_assert!(stamp_is_normal(&s), "{s} is not in normal form");
            let (a, b) = s.fork();
            prop_assert!(stamp_is_normal(&a) && stamp_is_normal(&b), "fork of {s}");
            prop_assert!(stamp_is_normal(&s.peek()));
        }
    }

    #[test]
    fn normalization_keeps_the_function_and_is_idempotent(raw in raw_event(), raw_id in raw_id()) {
        let e: Event = raw.text().parse().unwrap();
        prop_assert!(event_is_normal(&e), "{} normalized to {e}", raw.text());
        prop_assert_eq!(values(&e, raw.depth()), raw.values(raw.depth()));
        // Normalizing again (through the constructors and through text)
        // changes nothing.
        let rebuilt = match e.children() {
            None => Event::leaf(e.base()),
            Some((l, r)) => Event::node(e.base(), l.clone(), r.clone()).unwrap(),
        };
        prop_assert_eq!(&rebuilt, &e);
        prop_assert_eq!(&e.to_string().parse::<Event>().unwrap(), &e);

        let id: Id = raw_id.text().parse().unwrap();
        prop_assert!(id_is_normal(&id), "{} normalized to {id}", raw_id.text());
        prop_assert_eq!(owned(&id, raw_id.depth()), raw_id.owned(raw_id.depth()));
        let rebuilt = match id.children() {
            None => id.clone(),
            Some((l, r)) => Id::node(l.clone(), r.clone()),
        };
        prop_assert_eq!(&rebuilt, &id);
    }

    #[test]
    fn join_undoes_fork(ops in ops(40)) {
        for s in run(&ops).history {
            let (a, b) = s.fork();
            prop_assert_eq!(a.join(&b).unwrap(), s.clone());
            prop_assert_eq!(b.join(&a).unwrap(), s);
        }
    }

    #[test]
    fn forked_ids_are_disjoint_and_cover_the_parent(ops in ops(40)) {
        let run = run(&ops);
        for s in &run.history {
            let (a, b) = s.fork();
            prop_assert!(a.id().is_disjoint(b.id()));
            prop_assert_eq!(a.event_tree(), s.event_tree());
            if let Some(depth) = grid(&[s.id(), a.id(), b.id()], &[]) {
                let (pa, pb, ps) = (owned(a.id(), depth), owned(b.id(), depth), owned(s.id(), depth));
                for cell in 0..ps.len() {
                    prop_assert!(!(pa[cell] && pb[cell]), "{} and {} share cell {cell}", a.id(), b.id());
                    prop_assert_eq!(pa[cell] || pb[cell], ps[cell]);
                }
                // Splitting anything but 0 gives two non-empty halves.
                prop_assert!(s.id().is_zero() || (pa.contains(&true) && pb.contains(&true)));
            }
        }
        // The live replicas partition the whole interval between them.
        let mut all = Stamp::seed().peek();
        for s in &run.live {
            prop_assert!(!s.is_anonymous());
            all = all.join(s).unwrap();
        }
        prop_assert!(all.id().is_one());
    }

    #[test]
    fn event_strictly_advances_and_only_inside_the_own_id(ops in ops(40)) {
        for s in run(&ops).history {
            let e = s.event().unwrap();
            prop_assert!(s < e && s.leq(&e) && !e.leq(&s), "{s} -> {e}");
            prop_assert_eq!(e.id(), s.id());
            let Some(depth) = grid(&[s.id()], &[s.event_tree(), e.event_tree()]) else { continue };
            let (before, after, mine) =
                (values(s.event_tree(), depth), values(e.event_tree(), depth), owned(s.id(), depth));
            let mut raised = false;
            for cell in 0..before.len() {
                if mine[cell] {
                    prop_assert!(after[cell] >= before[cell]);
                    raised |= after[cell] > before[cell];
                } else {
                    prop_assert_eq!(after[cell], before[cell], "{} -> {} changed cell {} not owned", s, e, cell);
                }
            }
            prop_assert!(raised);
        }
    }

    #[test]
    fn an_event_reveals_nothing_new_about_other_replicas(ops in ops(40)) {
        // If another replica's stamp x is below s after s's event, it was
        // already below s: an event only records s's own activity. "Other
        // replicas" are the live ones and every earlier stamp whose id is
        // disjoint from s's (ancestors and retired predecessors of s own
        // part of its id).
        let run = run(&ops);
        for s in &run.live {
            let e = s.event().unwrap();
            let others = run
                .history
                .iter()
                .filter(|x| !x.is_anonymous() && x.id().is_disjoint(s.id()));
            for x in others {
                if x.leq(&e) {
                    prop_assert!(x.leq(s), "{x} <= event({s}) = {e} but not <= {s}");
                }
            }
        }
    }

    #[test]
    fn operations_match_the_papers_equations(ops in ops(40), a in event(), b in event()) {
        let history = run(&ops).history;
        for s in &history {
            if s.is_anonymous() {
                continue;
            }
            let expected = reference::event(&reference::raw_id(s.id()), &reference::raw_event(s.event_tree()));
            prop_assert_eq!(s.event().unwrap().event_tree().to_string(), expected.text(), "event({})", s);
        }
        for (x, y) in history.iter().zip(history.iter().rev()).map(|(x, y)| (x.event_tree(), y.event_tree())).chain([(&a, &b)]) {
            let (rx, ry) = (reference::raw_event(x), reference::raw_event(y));
            prop_assert_eq!(x.join(y).to_string(), reference::join(&rx, &ry).text());
            prop_assert_eq!(x.leq(y), reference::leq(&rx, &ry));
        }
    }

    #[test]
    fn event_join_is_a_least_upper_bound(a in event(), b in event(), c in event()) {
        let ab = a.join(&b);
        prop_assert!(event_is_normal(&ab));
        prop_assert_eq!(&ab, &b.join(&a));
        prop_assert_eq!(ab.join(&c), a.join(&b.join(&c)));
        prop_assert_eq!(&a.join(&a), &a);
        prop_assert!(a.leq(&ab) && b.leq(&ab));
        // Exactly the pointwise maximum: no upper bound is smaller.
        let depth = grid(&[], &[&a, &b, &ab]).unwrap();
        let (va, vb, vab) = (values(&a, depth), values(&b, depth), values(&ab, depth));
        for cell in 0..vab.len() {
            prop_assert_eq!(vab[cell], va[cell].max(vb[cell]));
        }
    }

    #[test]
    fn leq_agrees_with_pointwise_comparison(a in event(), b in event()) {
        let depth = grid(&[], &[&a, &b]).unwrap();
        let (va, vb) = (values(&a, depth), values(&b, depth));
        let pointwise = va.iter().zip(&vb).all(|(x, y)| x <= y);
        prop_assert_eq!(a.leq(&b), pointwise, "{} <= {}", a, b);
        prop_assert_eq!(a <= b, pointwise);
        prop_assert_eq!(a == b, va == vb);
        prop_assert_eq!(a.min(), *va.iter().min().unwrap());
        prop_assert_eq!(a.max(), *va.iter().max().unwrap());
    }

    #[test]
    fn leq_agrees_with_pointwise_comparison_on_real_stamps(ops in ops(40)) {
        let live = run(&ops).live;
        for x in &live {
            for y in &live {
                let Some(depth) = grid(&[], &[x.event_tree(), y.event_tree()]) else { continue };
                let (vx, vy) = (values(x.event_tree(), depth), values(y.event_tree(), depth));
                prop_assert_eq!(x.leq(y), vx.iter().zip(&vy).all(|(a, b)| a <= b));
            }
        }
    }

    #[test]
    fn sum_of_ids_is_the_union_or_an_overlap_error(a in id(), b in id()) {
        let depth = grid(&[&a, &b], &[]).unwrap();
        let (pa, pb) = (owned(&a, depth), owned(&b, depth));
        let overlap = pa.iter().zip(&pb).any(|(x, y)| *x && *y);
        prop_assert_eq!(a.is_disjoint(&b), !overlap);
        match a.sum(&b) {
            Ok(sum) => {
                prop_assert!(!overlap);
                prop_assert!(id_is_normal(&sum));
                let union: Vec<bool> = pa.iter().zip(&pb).map(|(x, y)| *x || *y).collect();
                prop_assert_eq!(owned(&sum, depth), union);
            }
            Err(e) => {
                prop_assert!(overlap, "{a} + {b}: {e}");
                prop_assert_eq!(e, rederive_itc::Error::OverlappingIds);
            }
        }
    }

    #[test]
    fn encoding_matches_the_papers_rules(ops in ops(40), i in id(), e in event(), big in any::<u64>()) {
        let mut stamps = run(&ops).history;
        stamps.push(Stamp::new(i.clone(), e));
        stamps.push(Stamp::new(i, Event::node(big / 2, Event::leaf(big / 2), Event::leaf(0)).unwrap()));
        for s in stamps {
            let bits: String = s.encode().iter().map(|b| format!("{b:08b}")).collect();
            let expected = reference::encode(&reference::raw_id(s.id()), &reference::raw_event(s.event_tree()));
            prop_assert_eq!(bits, expected, "{}", s);
        }
    }

    #[test]
    fn text_and_binary_round_trips_are_exact(ops in ops(40), i in id(), e in event()) {
        let mut stamps = run(&ops).history;
        stamps.push(Stamp::new(i, e));
        for s in stamps {
            let text = s.to_string();
            prop_assert!(!text.contains(' '));
            prop_assert_eq!(text.parse::<Stamp>().unwrap(), s.clone());
            let bytes = s.encode();
            prop_assert_eq!(Stamp::decode(&bytes).unwrap(), s.clone());
            prop_assert_eq!(s.id().to_string().parse::<Id>().unwrap(), s.id().clone());
            prop_assert_eq!(s.event_tree().to_string().parse::<Event>().unwrap(), s.event_tree().clone());
        }
    }
}
