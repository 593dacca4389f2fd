use super::*;

/// A vocabulary of hand-written surfaces; ids 0, 1, 2 are pad, bos, eos.
fn table(name: &str, words: &[&str]) -> TokenTable {
    let mut surfaces = vec![Vec::new(); 3];
    surfaces.extend(words.iter().map(|w| w.as_bytes().to_vec()));
    TokenTable::from_surfaces(name, surfaces, 2, 1, 0)
}

fn id(t: &TokenTable, word: &str) -> u32 {
    t.surfaces
        .iter()
        .position(|s| s == word.as_bytes())
        .unwrap() as u32
}

fn ids(t: &TokenTable, words: &[&str]) -> Vec<u32> {
    let mut v: Vec<u32> = words.iter().map(|w| id(t, w)).collect();
    v.push(t.eos);
    v
}

#[test]
fn edit_distance_counts_and_stops_at_its_bound() {
    assert_eq!(edit_distance(b"kitten", b"sitting", 10), 3);
    assert_eq!(edit_distance(b"", b"abc", 10), 3);
    assert_eq!(edit_distance(b"same", b"same", 0), 0);
    assert!(edit_distance(b"abcdef", b"uvwxyz", 2) > 2);
    assert!(edit_distance(b"a", b"abcdef", 2) > 2);
}

#[test]
fn the_mined_map_takes_equal_then_closest_then_longest_prefix() {
    let from = table("from-map", &[" Paris", " Par", "is", " Rome", "abcd"]);
    let to = table(
        "to-map",
        &[" Par", "is", " Pari", " Rom", " Romb", "e", "xbcd", "abc"],
    );
    let map = VocabMap::compute(&from, &to);
    let m = |w: &str| map.to[id(&from, w) as usize];
    // Identical surfaces map to each other.
    assert_eq!(m(" Par"), id(&to, " Par"));
    assert_eq!(m("is"), id(&to, "is"));
    // " Paris" -> " Pari" (distance 1) rather than " Par" (2).
    assert_eq!(m(" Paris"), id(&to, " Pari"));
    // " Rome": " Rom" and " Romb" are both at distance 1 with the same common prefix: the
    // lower id wins.
    assert_eq!(m(" Rome"), id(&to, " Rom"));
    // "abcd": "xbcd" and "abc" both at distance 1; the longer common prefix wins over the
    // lower id.
    assert_eq!(m("abcd"), id(&to, "abc"));
    // Special tokens map to their counterparts.
    assert_eq!(map.to[2], to.eos);
    assert_eq!(map.to[0], to.pad);
}

#[test]
fn positions_whose_tokens_start_at_the_same_byte_are_exact() {
    let t = table("t-pos", &[" Par", "is", " Paris", " is", " big"]);
    let s = table("s-pos", &[" Paris", " Par", "is", " i", "s", " big"]);
    // Teacher " Par" "is" " big" <eos>; student " Paris" " big" <eos>.
    let partners = align_positions(
        &t,
        &ids(&t, &[" Par", "is", " big"]),
        &s,
        &ids(&s, &[" Paris", " big"]),
    );
    assert_eq!(
        partners,
        [Partner::Exact(0), Partner::Exact(2), Partner::Exact(3)]
    );
    // The reverse: "is" starts inside the teacher's " Paris": no partner.
    let partners = align_positions(
        &s,
        &ids(&s, &[" Paris", " big"]),
        &t,
        &ids(&t, &[" Par", "is", " big"]),
    );
    assert_eq!(
        partners,
        [
            Partner::Exact(0),
            Partner::None,
            Partner::Exact(1),
            Partner::Exact(2)
        ]
    );
    // " is" against " i" "s": the first coincides, the second starts inside.
    let partners = align_positions(&t, &ids(&t, &[" is"]), &s, &ids(&s, &[" i", "s"]));
    assert_eq!(
        partners,
        [Partner::Exact(0), Partner::None, Partner::Exact(1)]
    );
}

#[test]
fn a_space_of_the_tokenizers_own_is_trimmed_before_offsets() {
    // A SentencePiece-like student spells "Paris" with its own leading space, the teacher
    // without one: the texts agree past the leading spaces.
    let t = table("t-lead", &["Par", "is"]);
    let s = table("s-lead", &[" ", "Paris", " Paris"]);
    let partners = align_positions(&t, &ids(&t, &["Par", "is"]), &s, &ids(&s, &[" ", "Paris"]));
    // The lone space predicts only spacing; "Paris" starts where "Par" does.
    assert_eq!(
        partners,
        [Partner::None, Partner::Exact(0), Partner::Exact(2)]
    );
    let partners = align_positions(&t, &ids(&t, &["Par", "is"]), &s, &ids(&s, &[" Paris"]));
    assert_eq!(partners, [Partner::Exact(0), Partner::Exact(2)]);
}

#[test]
fn different_spellings_are_warped() {
    let t = table("t-dtw", &[" colour", " red"]);
    let s = table("s-dtw", &[" color", " re", "d"]);
    let partners = align_positions(
        &t,
        &ids(&t, &[" colour", " red"]),
        &s,
        &ids(&s, &[" color", " re", "d"]),
    );
    assert_eq!(
        partners,
        [
            Partner::Warped(0),
            Partner::Warped(1),
            Partner::Warped(1),
            Partner::Warped(2)
        ]
    );
}

fn logits_with(vocab: usize, rows: &[(usize, f32)]) -> Vec<f32> {
    let mut v = vec![0f32; vocab];
    for &(i, z) in rows {
        v[i] = z;
    }
    v
}

fn probabilities(l: &Logits, b: usize, j: usize, t: f32) -> Vec<f64> {
    softmax(l.row(b, j), t)
}

#[test]
fn mined_targets_carry_the_teachers_top_k_to_the_mapped_ids() {
    let t = table("t-carry", &[" Paris", " Rome", " big"]);
    let s = table("s-carry", &[" Par", "is", " Paris", " Rom"]);
    let tv = t.len();
    let sv = s.len() + 2; // a model may have more rows than its tokenizer has tokens
    let bridge = Bridge {
        alignment: Alignment::Mined,
        map: Some(Arc::new(VocabMap::compute(&t, &s))),
        from: Arc::new(t),
        to: Arc::new(s),
        top_k: 2,
    };
    let (t, s) = (bridge.from.clone(), bridge.to.clone());
    let te = Example::new(vec![5], ids(&t, &[" Paris"]));
    let se = Example::new(vec![5], ids(&s, &[" Paris"]));
    let mut data = logits_with(
        tv,
        &[
            (id(&t, " Paris") as usize, 5.0),
            (id(&t, " Rome") as usize, 4.0),
        ],
    );
    data.extend(logits_with(tv, &[(t.eos as usize, 9.0)]));
    let teacher = Logits::new(1, 2, tv as u32, data);
    let out = bridge.carry(&teacher, &[te], &[se], None, sv, 1.0);
    assert_eq!((out.batch, out.answer_len, out.vocab), (1, 2, sv as u32));
    let p = probabilities(&out, 0, 0, 1.0);
    let (paris, rom) = (id(&s, " Paris") as usize, id(&s, " Rom") as usize);
    // Top-2 renormalised: e^5 / (e^5 + e^4) and e^4 / (e^5 + e^4).
    let expect = 1.0 / (1.0 + (-1f64).exp());
    assert!((p[paris] - expect).abs() < 1e-6, "{}", p[paris]);
    assert!((p[rom] - (1.0 - expect)).abs() < 1e-6, "{}", p[rom]);
    // The end of sequence carries to the student's end of sequence.
    let p = probabilities(&out, 0, 1, 1.0);
    assert!(p[s.eos as usize] > 0.999);
}

#[test]
fn positions_without_a_partner_fall_back_to_the_reference_token() {
    let t = table("t-fall", &[" Paris"]);
    let s = table("s-fall", &[" Par", "is"]);
    let bridge = Bridge {
        alignment: Alignment::Mined,
        map: Some(Arc::new(VocabMap::compute(&t, &s))),
        from: Arc::new(t),
        to: Arc::new(s),
        top_k: 4,
    };
    let (t, s) = (bridge.from.clone(), bridge.to.clone());
    let te = Example::new(vec![], ids(&t, &[" Paris"]));
    let se = Example::new(vec![], ids(&s, &[" Par", "is"]));
    let teacher = Logits::new(1, 2, t.len() as u32, vec![0.0; 2 * t.len()]);
    let out = bridge.carry(&teacher, &[te], &[se], None, s.len(), 2.0);
    let p = probabilities(&out, 0, 1, 2.0);
    assert!(p[id(&s, "is") as usize] > 0.999, "{p:?}");
}

#[test]
fn uld_targets_give_the_students_ranks_the_teachers_sorted_probabilities() {
    let teacher = [0.1, 0.6, 0.3];
    let mine = [0.5, 0.2, 0.2, 0.1];
    let mut q = vec![0.0; 4];
    assert!(uld_target(&teacher, &mine, &mut q));
    // Ranks of the student: 0, then 1 and 2 (tie, lower id first), then 3.
    for (got, want) in q.iter().zip([0.6, 0.3, 0.1, 0.0]) {
        assert!((got - want).abs() < 1e-12, "{q:?}");
    }
    assert!(uld_distance(&teacher, &q) < 1e-12);
    assert!((uld_distance(&teacher, &mine) - (0.1 + 0.1 + 0.1 + 0.1)).abs() < 1e-12);
}

#[test]
fn mean_kl_is_zero_on_equal_targets() {
    let ex = Example::new(vec![1], vec![3, 2]);
    let l = Logits::new(1, 2, 3, vec![0.1, 0.5, -0.3, 1.0, 0.0, 0.2]);
    assert!(mean_kl(&l, &l, std::slice::from_ref(&ex), 2.0).abs() < 1e-12);
    let other = Logits::new(1, 2, 3, vec![1.1, -0.5, 0.3, 0.0, 1.0, 0.2]);
    assert!(mean_kl(&l, &other, &[ex], 2.0) > 0.01);
}

#[test]
fn the_uld_row_writes_the_reference_target_as_logits() {
    let z = [0.3f32, 2.0, -1.0, 0.7];
    // Negative, positive and tied logits: ranks by value, ties to the lower id.
    let mine = [0.1f32, -0.2, 0.9, 0.0, 0.4, -0.2, -3.0];
    let t = 2.0;
    let p = softmax(&z, t);
    let m = softmax(&mine, t);
    let mut q = vec![0.0; mine.len()];
    assert!(uld_target(&p, &m, &mut q));
    let mut out = vec![-1e9f32; mine.len()];
    assert!(uld_row(&z, &mine, t, &mut Scratch::default(), &mut out));
    let back = softmax(&out, t);
    for (a, b) in back.iter().zip(&q) {
        assert!((a - b).abs() < 1e-5, "{back:?} vs {q:?}");
    }
}

#[test]
fn the_radix_sort_sorts() {
    let mut state = 7u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state
    };
    let mut a: Vec<u64> = (0..3000).map(|_| next() >> (next() % 64)).collect();
    let mut b: Vec<u32> = (0..3000).map(|_| (next() >> 40) as u32).collect();
    b.extend([0, u32::MAX, 5, 5]);
    let (mut ea, mut eb) = (a.clone(), b.clone());
    ea.sort_unstable();
    eb.sort_unstable();
    radix_sort(&mut a, &mut Vec::new());
    radix_sort(&mut b, &mut Vec::new());
    assert_eq!(a, ea);
    assert_eq!(b, eb);
    let mut same = vec![9u32; 10];
    radix_sort(&mut same, &mut Vec::new());
    assert_eq!(same, vec![9u32; 10]);
}
