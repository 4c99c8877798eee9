//! Numbers spelled as English words: cardinals, ordinals, years, digit strings.

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];
const SCALES: [(u64, &str); 5] = [
    (1_000_000_000_000_000, "quadrillion"),
    (1_000_000_000_000, "trillion"),
    (1_000_000_000, "billion"),
    (1_000_000, "million"),
    (1_000, "thousand"),
];

/// "one hundred twenty-three" style cardinal (American: no "and").
pub fn cardinal(n: u64) -> String {
    if n == 0 {
        return ONES[0].to_owned();
    }
    let mut parts: Vec<String> = Vec::new();
    let mut rest = n;
    for (scale, name) in SCALES {
        if rest >= scale {
            parts.push(format!("{} {name}", below_thousand(rest / scale)));
            rest %= scale;
        }
    }
    if rest > 0 {
        parts.push(below_thousand(rest));
    }
    parts.join(" ")
}

fn below_thousand(n: u64) -> String {
    debug_assert!(n < 1000);
    let hundreds = n / 100;
    let rest = n % 100;
    match (hundreds, rest) {
        (0, r) => below_hundred(r),
        (h, 0) => format!("{} hundred", ONES[h as usize]),
        (h, r) => format!("{} hundred {}", ONES[h as usize], below_hundred(r)),
    }
}

fn below_hundred(n: u64) -> String {
    debug_assert!(n < 100);
    if n < 20 {
        ONES[n as usize].to_owned()
    } else if n.is_multiple_of(10) {
        TENS[(n / 10) as usize].to_owned()
    } else {
        format!("{}-{}", TENS[(n / 10) as usize], ONES[(n % 10) as usize])
    }
}

/// "twenty-first", "one hundredth".
pub fn ordinal(n: u64) -> String {
    let words = cardinal(n);
    // Only the last word changes; it may be hyphenated ("twenty-one" -> "twenty-first").
    let split = words.rfind([' ', '-']).map(|i| i + 1).unwrap_or(0);
    let (head, last) = words.split_at(split);
    let last = match last {
        "one" => "first".to_owned(),
        "two" => "second".to_owned(),
        "three" => "third".to_owned(),
        "five" => "fifth".to_owned(),
        "eight" => "eighth".to_owned(),
        "nine" => "ninth".to_owned(),
        "twelve" => "twelfth".to_owned(),
        w if w.ends_with('y') => format!("{}ieth", &w[..w.len() - 1]),
        w => format!("{w}th"),
    };
    format!("{head}{last}")
}

/// A year as spoken: 1999 "nineteen ninety-nine", 2005 "two thousand five",
/// 2024 "twenty twenty-four", 1900 "nineteen hundred".
pub fn year(n: u64) -> String {
    if !(1000..10000).contains(&n) {
        return cardinal(n);
    }
    let (hi, lo) = (n / 100, n % 100);
    if (2000..2010).contains(&n) || n.is_multiple_of(1000) {
        return cardinal(n);
    }
    match lo {
        0 => format!("{} hundred", below_hundred(hi)),
        1..=9 => format!("{} oh {}", below_hundred(hi), ONES[lo as usize]),
        _ => format!("{} {}", below_hundred(hi), below_hundred(lo)),
    }
}

/// Each digit by name: "four one five".
pub fn digits(s: &str) -> String {
    s.chars()
        .filter_map(|c| c.to_digit(10))
        .map(|d| ONES[d as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses "1,234" or "1234" (commas only between groups of three).
pub fn parse_grouped(s: &str) -> Option<u64> {
    if s.is_empty() || !s.chars().next()?.is_ascii_digit() {
        return None;
    }
    if s.contains(',') {
        let mut groups = s.split(',');
        let first = groups.next()?;
        if first.is_empty() || first.len() > 3 {
            return None;
        }
        for g in s.split(',').skip(1) {
            if g.len() != 3 || !g.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
        }
    }
    let plain: String = s.chars().filter(|&c| c != ',').collect();
    if !plain.bytes().all(|b| b.is_ascii_digit()) || plain.len() > 18 {
        return None;
    }
    plain.parse().ok()
}

/// A decimal number: "3.14" -> "three point one four", "1,000" -> "one thousand".
pub fn decimal(s: &str) -> Option<String> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let int_words = if int.is_empty() {
        "zero".to_owned()
    } else {
        cardinal(parse_grouped(int)?)
    };
    match frac {
        None => Some(int_words),
        Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
            Some(format!("{int_words} point {}", digits(f)))
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cardinals() {
        assert_eq!(cardinal(0), "zero");
        assert_eq!(cardinal(13), "thirteen");
        assert_eq!(cardinal(42), "forty-two");
        assert_eq!(cardinal(100), "one hundred");
        assert_eq!(
            cardinal(1_234_567),
            "one million two hundred thirty-four thousand five hundred sixty-seven"
        );
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal(1), "first");
        assert_eq!(ordinal(2), "second");
        assert_eq!(ordinal(12), "twelfth");
        assert_eq!(ordinal(20), "twentieth");
        assert_eq!(ordinal(21), "twenty-first");
        assert_eq!(ordinal(103), "one hundred third");
    }

    #[test]
    fn years() {
        assert_eq!(year(1999), "nineteen ninety-nine");
        assert_eq!(year(2005), "two thousand five");
        assert_eq!(year(2024), "twenty twenty-four");
        assert_eq!(year(1900), "nineteen hundred");
        assert_eq!(year(1905), "nineteen oh five");
        assert_eq!(year(2000), "two thousand");
    }

    #[test]
    fn decimals_and_groups() {
        assert_eq!(decimal("3.14").as_deref(), Some("three point one four"));
        assert_eq!(decimal("1,000").as_deref(), Some("one thousand"));
        assert_eq!(decimal("1,00"), None);
        assert_eq!(decimal("1.2.3"), None);
    }
}
