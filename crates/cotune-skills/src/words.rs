//! The fixed word lists the domains draw from, and the function words their templates vary in.

/// Common short English words for the word tasks (reversal, sorting, counting, copying).
///
/// None is a function word ([`crate::FUNCTION_WORDS`]) or a word of any template, so the words
/// of an instance can be read back from its question.
pub(crate) const SHORT_WORDS: [&str; 60] = [
    "cat", "dog", "sun", "red", "big", "cup", "hat", "map", "pen", "box", "bed", "car", "bus",
    "egg", "fox", "owl", "pig", "cow", "bee", "ant", "tree", "fish", "bird", "moon", "star",
    "rain", "snow", "wind", "fire", "rock", "sand", "milk", "cake", "rice", "corn", "leaf", "rose",
    "lamp", "door", "book", "ball", "kite", "ship", "boat", "road", "hill", "lake", "blue", "pink",
    "gold", "cold", "warm", "soft", "fast", "slow", "tall", "dark", "jump", "sing", "swim",
];

/// Nouns of the lexicon domains' shared English word list.
pub(crate) const NOUNS: [&str; 60] = [
    "cat", "dog", "bird", "fish", "horse", "cow", "sheep", "goat", "mouse", "bear", "wolf", "fox",
    "lion", "frog", "duck", "tree", "flower", "grass", "river", "lake", "sea", "hill", "stone",
    "sun", "moon", "star", "rain", "snow", "wind", "fire", "house", "door", "road", "bridge",
    "boat", "car", "ship", "bread", "milk", "apple", "egg", "cake", "water", "book", "ball", "box",
    "cup", "hat", "shoe", "chair", "table", "bed", "king", "child", "man", "woman", "friend",
    "teacher", "farmer", "baby",
];

/// Adjectives of the lexicon domains' shared English word list.
pub(crate) const ADJECTIVES: [&str; 40] = [
    "red", "blue", "green", "yellow", "black", "white", "big", "small", "old", "young", "new",
    "happy", "sad", "fast", "slow", "hot", "cold", "tall", "short", "long", "soft", "hard", "warm",
    "dark", "bright", "quiet", "loud", "sweet", "clean", "dirty", "rich", "poor", "strong", "weak",
    "kind", "brave", "tired", "hungry", "wet", "dry",
];

/// Verbs (third person singular) of the lexicon domains' shared English word list.
pub(crate) const VERBS: [&str; 50] = [
    "runs", "sees", "eats", "likes", "finds", "takes", "makes", "holds", "wants", "needs", "sings",
    "jumps", "walks", "sleeps", "reads", "swims", "flies", "drinks", "plays", "opens", "closes",
    "helps", "loves", "hates", "calls", "carries", "pulls", "pushes", "throws", "catches",
    "builds", "breaks", "cooks", "paints", "washes", "watches", "follows", "visits", "hears",
    "knows", "brings", "buys", "sells", "draws", "climbs", "kicks", "cuts", "hides", "wakes",
    "chases",
];

/// The 150 English words every lexicon domain translates: nouns, then adjectives, then verbs.
pub(crate) fn lexicon_english() -> impl Iterator<Item = &'static str> {
    NOUNS
        .iter()
        .chain(ADJECTIVES.iter())
        .chain(VERBS.iter())
        .copied()
}

pub(crate) const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

pub(crate) const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
