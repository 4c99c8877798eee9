//! Text normalisation before G2P: turns written forms (numbers, money, dates, times, phone
//! numbers, abbreviations, addresses) into the words a reader would say. Pure functions.
//!
//! Works token by token (whitespace-separated) with one or two tokens of look-ahead, which is
//! what streaming needs: the chunker only cuts at whitespace, so a token is never split.

use super::numbers::{cardinal, decimal, digits, ordinal, parse_grouped, year};

/// Spoken form of `text`. Keeps clause punctuation (`, . ! ? ; :`) for prosody.
pub fn normalize(text: &str) -> String {
    let tokens: Vec<Token> = text.split_whitespace().map(Token::split).collect();
    let mut out: Vec<String> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let (words, used) = expand(&tokens, i);
        let last = &tokens[i + used - 1];
        let mut piece = format!("{}{}", tokens[i].lead_spoken(), words);
        piece.push_str(&last.trail_spoken(used == 1 && tokens[i].abbreviation_ate_period));
        if !piece.trim().is_empty() {
            out.push(piece.trim().to_owned());
        }
        i += used;
    }
    out.join(" ")
}

/// A whitespace token split into leading punctuation, core, trailing punctuation.
#[derive(Debug, Clone)]
struct Token<'a> {
    lead: &'a str,
    core: &'a str,
    trail: &'a str,
    /// Set when the core is an abbreviation whose own period sits in `trail`.
    abbreviation_ate_period: bool,
}

impl<'a> Token<'a> {
    fn split(raw: &'a str) -> Self {
        let lead_len = raw
            .char_indices()
            .find(|&(_, c)| !matches!(c, '"' | '\'' | '(' | '[' | '{' | '“' | '‘' | '«'))
            .map(|(i, _)| i)
            .unwrap_or(raw.len());
        let rest = &raw[lead_len..];
        let core_len = rest
            .char_indices()
            .rev()
            .find(|&(_, c)| {
                !matches!(
                    c,
                    '.' | ','
                        | ';'
                        | ':'
                        | '!'
                        | '?'
                        | '"'
                        | '\''
                        | ')'
                        | ']'
                        | '}'
                        | '”'
                        | '’'
                        | '»'
                )
            })
            .map(|(i, c)| i + c.len_utf8())
            .unwrap_or(0);
        let (core, trail) = rest.split_at(core_len);
        let mut token = Token {
            lead: &raw[..lead_len],
            core,
            trail,
            abbreviation_ate_period: false,
        };
        token.abbreviation_ate_period =
            trail.starts_with('.') && abbreviation(&format!("{core}.")).is_some();
        token
    }

    fn lead_spoken(&self) -> &'static str {
        ""
    }

    /// Clause punctuation kept after the spoken words.
    fn trail_spoken(&self, drop_first_period: bool) -> String {
        let trail = if drop_first_period {
            &self.trail[1..]
        } else {
            self.trail
        };
        trail
            .chars()
            .filter(|c| matches!(c, '.' | ',' | ';' | ':' | '!' | '?'))
            .take(1)
            .collect()
    }

    fn is_sentence_end(&self) -> bool {
        self.trail.chars().any(|c| matches!(c, '.' | '!' | '?'))
    }
}

/// Expands tokens[i..] and says how many tokens it used (at least one).
fn expand(tokens: &[Token], i: usize) -> (String, usize) {
    let t = &tokens[i];
    let next = tokens.get(i + 1);
    let core = t.core;
    if core.is_empty() {
        return (String::new(), 1);
    }
    if t.abbreviation_ate_period {
        let abbr = format!("{core}.");
        // "St." before a name is Saint, elsewhere Street; "No." before a number is "number".
        let spoken = match abbr.to_ascii_lowercase().as_str() {
            "st." if next.is_some_and(|n| starts_upper(n.core)) && !t.is_sentence_end_only() => {
                "Saint"
            }
            "no." if next.is_some_and(|n| n.core.starts_with(|c: char| c.is_ascii_digit())) => {
                "number"
            }
            _ => abbreviation(&abbr).unwrap_or(core),
        };
        return (spoken.to_owned(), 1);
    }
    // Two-token forms first: "(555) 123-4567", "$5 million", "3:30 pm", "March 5, 2024".
    if let Some(n) = next
        && let Some(s) = phone_two(t, n)
    {
        return (s, 2);
    }
    if let Some(n) = next
        && t.trail.is_empty()
    {
        if let Some(s) = currency_with_scale(core, n.core) {
            return (s, 2);
        }
        if let Some(s) = time(core, Some(n.core)) {
            return (s, 2);
        }
    }
    if let Some(month) = month_name(core)
        && let Some(n) = next
        && t.trail.is_empty()
        && let Some(day) = parse_day(n.core)
    {
        let mut s = format!("{month} {}", ordinal(day));
        if n.trail == ","
            && let Some(y) = tokens.get(i + 2)
            && let Some(yr) = parse_year(y.core)
        {
            s.push_str(&format!(" {}", year(yr)));
            return (s, 3);
        }
        return (s, 2);
    }
    if let Some(s) = single(core, next.map(|n| n.core)) {
        return (s, 1);
    }
    (core.to_owned(), 1)
}

impl Token<'_> {
    fn is_sentence_end_only(&self) -> bool {
        // "Main St." at the end of a sentence keeps Street.
        self.trail.len() > 1 && self.is_sentence_end()
    }
}

/// One token on its own (with a peek at the next core for context).
fn single(core: &str, next: Option<&str>) -> Option<String> {
    if let Some(s) = email(core) {
        return Some(s);
    }
    if let Some(s) = url(core) {
        return Some(s);
    }
    if let Some(s) = currency(core) {
        return Some(s);
    }
    if let Some(s) = percent(core) {
        return Some(s);
    }
    if let Some(s) = ordinal_token(core) {
        return Some(s);
    }
    if let Some(s) = time(core, None) {
        return Some(s);
    }
    if let Some(s) = date(core) {
        return Some(s);
    }
    if let Some(s) = phone(core) {
        return Some(s);
    }
    if let Some(s) = number(core, next) {
        return Some(s);
    }
    if let Some(s) = symbol(core) {
        return Some(s.to_owned());
    }
    mixed(core)
}

fn starts_upper(s: &str) -> bool {
    s.starts_with(|c: char| c.is_uppercase())
}

/// Common abbreviations, written with their period.
fn abbreviation(abbr: &str) -> Option<&'static str> {
    Some(match abbr {
        "Dr." => "Doctor",
        "Mr." => "Mister",
        "Mrs." => "Missus",
        "Ms." => "Miz",
        "Prof." => "Professor",
        "Sr." => "Senior",
        "Jr." => "Junior",
        "St." => "Street",
        "Ave." => "Avenue",
        "Blvd." => "Boulevard",
        "Rd." => "Road",
        "Mt." => "Mount",
        "Inc." => "Incorporated",
        "Ltd." => "Limited",
        "Co." => "Company",
        "Corp." => "Corporation",
        "Dept." => "Department",
        "Gov." => "Governor",
        "Sen." => "Senator",
        "Rep." => "Representative",
        "Gen." => "General",
        "Capt." => "Captain",
        "Lt." => "Lieutenant",
        "Sgt." => "Sergeant",
        "No." | "no." => "number",
        "etc." => "et cetera",
        "e.g." => "for example",
        "i.e." => "that is",
        "vs." => "versus",
        "approx." => "approximately",
        "min." => "minutes",
        "hr." | "hrs." => "hours",
        "Jan." => "January",
        "Feb." => "February",
        "Mar." => "March",
        "Apr." => "April",
        "Aug." => "August",
        "Sep." | "Sept." => "September",
        "Oct." => "October",
        "Nov." => "November",
        "Dec." => "December",
        "Mon." => "Monday",
        "Tue." | "Tues." => "Tuesday",
        "Wed." => "Wednesday",
        "Thu." | "Thurs." => "Thursday",
        "Fri." => "Friday",
        "Sat." => "Saturday",
        "Sun." => "Sunday",
        _ => return None,
    })
}

const MONTHS: [&str; 12] = [
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

fn month_name(s: &str) -> Option<&'static str> {
    MONTHS.iter().copied().find(|m| {
        m.eq_ignore_ascii_case(s) || (s.len() == 3 && m[..3].eq_ignore_ascii_case(s) && s != "may")
    })
}

fn parse_day(s: &str) -> Option<u64> {
    let s = s
        .strip_suffix("st")
        .or_else(|| s.strip_suffix("nd"))
        .or_else(|| s.strip_suffix("rd"))
        .or_else(|| s.strip_suffix("th"))
        .unwrap_or(s);
    let d: u64 = if s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()?
    } else {
        return None;
    };
    (1..=31).contains(&d).then_some(d)
}

fn parse_year(s: &str) -> Option<u64> {
    (s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn email(s: &str) -> Option<String> {
    let (local, domain) = s.split_once('@')?;
    if local.is_empty() || !domain.contains('.') || domain.contains('@') {
        return None;
    }
    Some(format!(
        "{} at {}",
        address_part(local),
        address_part(domain)
    ))
}

const TLDS: [&str; 14] = [
    "com", "org", "net", "io", "dev", "ai", "edu", "gov", "co", "uk", "de", "fr", "app", "info",
];

fn url(s: &str) -> Option<String> {
    let lower = s.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    let body = match rest {
        Some(r) => r,
        None => {
            let host = lower.split('/').next()?;
            let tld = host.rsplit('.').next()?;
            if !host.contains('.')
                || !TLDS.contains(&tld)
                || !host.starts_with(char::is_alphanumeric)
            {
                return None;
            }
            &lower
        }
    };
    let body = body.trim_end_matches('/');
    let (host, path) = body.split_once('/').unwrap_or((body, ""));
    let host = match host.strip_prefix("www.") {
        Some(h) => format!("w w w dot {}", address_part(h)),
        None => address_part(host),
    };
    if path.is_empty() {
        Some(host)
    } else {
        let path: Vec<String> = path.split('/').map(address_part).collect();
        Some(format!("{host} slash {}", path.join(" slash ")))
    }
}

/// A host name or mailbox: dots, dashes and underscores spoken, digits read one by one.
fn address_part(s: &str) -> String {
    let mut words = Vec::new();
    let mut run = String::new();
    let flush = |run: &mut String, words: &mut Vec<String>| {
        if !run.is_empty() {
            if run.bytes().all(|b| b.is_ascii_digit()) {
                words.push(digits(run));
            } else {
                words.push(run.clone());
            }
            run.clear();
        }
    };
    for c in s.chars() {
        let sep = match c {
            '.' => Some("dot"),
            '-' => Some("dash"),
            '_' => Some("underscore"),
            '+' => Some("plus"),
            _ => None,
        };
        match sep {
            Some(word) => {
                flush(&mut run, &mut words);
                words.push(word.to_owned());
            }
            None if c.is_alphanumeric() => {
                if !run.is_empty() && run.chars().all(|r| r.is_ascii_digit()) != c.is_ascii_digit()
                {
                    flush(&mut run, &mut words);
                }
                run.push(c);
            }
            None => {}
        }
    }
    flush(&mut run, &mut words);
    words.join(" ")
}

/// Currency symbol and (singular, plural) names of the unit and its hundredth.
fn currency_unit(c: char) -> Option<[&'static str; 4]> {
    Some(match c {
        '$' => ["dollar", "dollars", "cent", "cents"],
        '€' => ["euro", "euros", "cent", "cents"],
        '£' => ["pound", "pounds", "penny", "pence"],
        '¥' => ["yen", "yen", "sen", "sen"],
        _ => return None,
    })
}

fn currency(s: &str) -> Option<String> {
    let sym = s.chars().next()?;
    let [one, many, cent, cents] = currency_unit(sym)?;
    let amount = &s[sym.len_utf8()..];
    let (int, frac) = amount.split_once('.').unwrap_or((amount, ""));
    let whole = if int.is_empty() {
        0
    } else {
        parse_grouped(int)?
    };
    let hundredths = match frac.len() {
        0 => 0,
        2 if frac.bytes().all(|b| b.is_ascii_digit()) => frac.parse::<u64>().ok()?,
        _ => return decimal(amount).map(|d| format!("{d} {many}")),
    };
    let unit = |n: u64, a: &str, b: &str| format!("{} {}", cardinal(n), if n == 1 { a } else { b });
    Some(match (whole, hundredths) {
        (w, 0) => unit(w, one, many),
        (0, c) => unit(c, cent, cents),
        (w, c) => format!("{} and {}", unit(w, one, many), unit(c, cent, cents)),
    })
}

fn currency_with_scale(s: &str, next: &str) -> Option<String> {
    let scale = next.to_ascii_lowercase();
    if !matches!(
        scale.as_str(),
        "thousand" | "million" | "billion" | "trillion"
    ) {
        return None;
    }
    let sym = s.chars().next()?;
    let [_, many, _, _] = currency_unit(sym)?;
    let amount = decimal(&s[sym.len_utf8()..])?;
    Some(format!("{amount} {scale} {many}"))
}

fn percent(s: &str) -> Option<String> {
    let n = s.strip_suffix('%')?;
    let (sign, n) = match n.strip_prefix('-') {
        Some(rest) => ("minus ", rest),
        None => ("", n),
    };
    Some(format!("{sign}{} percent", decimal(n)?))
}

fn ordinal_token(s: &str) -> Option<String> {
    let lower = s.to_ascii_lowercase();
    let digits_part = ["st", "nd", "rd", "th"]
        .iter()
        .find_map(|suf| lower.strip_suffix(suf))?;
    let n = parse_grouped(digits_part)?;
    Some(ordinal(n))
}

/// "3:30", "3:05pm", "15:00", optionally followed by "am"/"pm" in the next token.
fn time(s: &str, next: Option<&str>) -> Option<String> {
    let lower = s.to_ascii_lowercase();
    let (clock, inline_meridiem) = match lower
        .strip_suffix("am")
        .or_else(|| lower.strip_suffix("a.m"))
        .map(|c| (c, Some("a m")))
        .or_else(|| {
            lower
                .strip_suffix("pm")
                .or_else(|| lower.strip_suffix("p.m"))
                .map(|c| (c, Some("p m")))
        }) {
        Some(found) => found,
        None => (lower.as_str(), None),
    };
    let meridiem = match (
        inline_meridiem,
        next.map(str::to_ascii_lowercase).as_deref(),
    ) {
        (Some(m), None) => Some(m),
        (None, Some("am" | "a.m" | "a.m.")) => Some("a m"),
        (None, Some("pm" | "p.m" | "p.m.")) => Some("p m"),
        (None, None) => None,
        _ => return None, // a look-ahead call that found no meridiem: not a two-token time
    };
    // "3.30" is a clock only with a meridiem after it (British style); else a decimal.
    let split = clock
        .split_once(':')
        .or_else(|| meridiem.and_then(|_| clock.split_once('.')));
    let (h, m) = match split {
        Some((h, m)) => (h, Some(m)),
        None if meridiem.is_some() => (clock, None),
        None => return None,
    };
    if h.is_empty() || h.len() > 2 || !h.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hour: u64 = h.parse().ok()?;
    let minute: u64 = match m {
        Some(m) if m.len() == 2 && m.bytes().all(|b| b.is_ascii_digit()) => m.parse().ok()?,
        Some(_) => return None,
        None => 0,
    };
    if hour > 24 || minute > 59 {
        return None;
    }
    let mut words = cardinal(hour);
    match minute {
        0 if meridiem.is_none() && hour > 12 => words.push_str(" hundred"),
        0 if meridiem.is_none() => words.push_str(" o'clock"),
        0 => {}
        1..=9 => words.push_str(&format!(" oh {}", cardinal(minute))),
        _ => words.push_str(&format!(" {}", cardinal(minute))),
    }
    if let Some(m) = meridiem {
        words.push(' ');
        words.push_str(m);
    }
    Some(words)
}

/// "2024-03-15" (ISO) or "3/15/2024" (US month first).
fn date(s: &str) -> Option<String> {
    let numeric = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = if s.contains('-') {
        s.split('-')
    } else {
        s.split('/')
    }
    .collect();
    if parts.len() != 3 || !parts.iter().all(|p| numeric(p)) {
        return None;
    }
    let nums: Vec<u64> = parts
        .iter()
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (y, m, d) = if s.contains('-') && parts[0].len() == 4 {
        (nums[0], nums[1], nums[2])
    } else if s.contains('/') && (parts[2].len() == 4 || parts[2].len() == 2) {
        let y = if parts[2].len() == 2 {
            2000 + nums[2]
        } else {
            nums[2]
        };
        (y, nums[0], nums[1])
    } else {
        return None;
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(format!(
        "{} {}, {}",
        MONTHS[(m - 1) as usize],
        ordinal(d),
        year(y)
    ))
}

/// Digit groups read digit by digit with a pause between groups.
fn digit_groups(groups: &[&str]) -> String {
    groups
        .iter()
        .map(|g| digits(g))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "555-123-4567", "555-1234", "+1-555-123-4567", "555.123.4567".
fn phone(s: &str) -> Option<String> {
    let (plus, body) = match s.strip_prefix('+') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let sep = if body.contains('-') { '-' } else { '.' };
    let groups: Vec<&str> = body.split(sep).collect();
    if groups
        .iter()
        .any(|g| g.is_empty() || !g.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let ok = matches!(lens.as_slice(), [3, 4] | [3, 3, 4] | [1..=3, 3, 3, 4]);
    if !ok || (!plus && lens.len() == 4 && sep == '.') {
        return None;
    }
    let spoken = digit_groups(&groups);
    Some(if plus {
        format!("plus {spoken}")
    } else {
        spoken
    })
}

/// "(555) 123-4567".
fn phone_two(a: &Token, b: &Token) -> Option<String> {
    let area = a
        .core
        .strip_suffix(')')
        .or(if a.lead == "(" { Some(a.core) } else { None })?;
    let area = area.strip_prefix('(').unwrap_or(area);
    if area.len() != 3 || !area.bytes().all(|x| x.is_ascii_digit()) {
        return None;
    }
    let rest: Vec<&str> = b.core.split('-').collect();
    if rest.len() != 2 || rest[0].len() != 3 || rest[1].len() != 4 {
        return None;
    }
    if !rest.iter().all(|g| g.bytes().all(|x| x.is_ascii_digit())) {
        return None;
    }
    Some(digit_groups(&[area, rest[0], rest[1]]))
}

/// Plain numbers: "-5", "1,234", "3.14", ranges "10-20", and unit words after them.
fn number(s: &str, _next: Option<&str>) -> Option<String> {
    if let Some(rest) = s.strip_prefix('-').or_else(|| s.strip_prefix('−')) {
        return decimal(rest).map(|d| format!("minus {d}"));
    }
    if let Some((a, b)) = s.split_once('-')
        && let (Some(a), Some(b)) = (decimal(a), decimal(b))
    {
        return Some(format!("{a} to {b}"));
    }
    decimal(s)
}

fn symbol(s: &str) -> Option<&'static str> {
    Some(match s {
        "&" => "and",
        "+" => "plus",
        "=" => "equals",
        "@" => "at",
        "%" => "percent",
        "#" => "number",
        "-" | "–" | "—" => "",
        "/" => "slash",
        "x" => "x",
        _ => return None,
    })
}

/// Tokens mixing letters, digits and symbols ("COVID-19", "5km", "#1", "A&W"): each run spoken.
fn mixed(s: &str) -> Option<String> {
    if !s
        .chars()
        .any(|c| c.is_ascii_digit() || matches!(c, '&' | '#' | '%' | '+' | '@'))
    {
        return None;
    }
    let mut words: Vec<String> = Vec::new();
    let mut run = String::new();
    let mut run_digits = false;
    let flush = |run: &mut String, digits_run: bool, words: &mut Vec<String>| {
        if run.is_empty() {
            return;
        }
        if digits_run {
            words.push(decimal(run).unwrap_or_else(|| digits(run)));
        } else {
            words.push(unit_word(run).unwrap_or(run).to_owned());
        }
        run.clear();
    };
    for c in s.chars() {
        if c.is_ascii_digit() || (c == '.' && run_digits && !run.is_empty()) {
            if !run_digits {
                flush(&mut run, run_digits, &mut words);
            }
            run_digits = true;
            run.push(c);
        } else if c.is_alphabetic() || c == '\'' {
            if run_digits {
                flush(&mut run, run_digits, &mut words);
            }
            run_digits = false;
            run.push(c);
        } else {
            flush(&mut run, run_digits, &mut words);
            if let Some(w) = symbol(&c.to_string())
                && !w.is_empty()
            {
                words.push(w.to_owned());
            }
        }
    }
    flush(&mut run, run_digits, &mut words);
    Some(words.join(" "))
}

fn unit_word(s: &str) -> Option<&'static str> {
    Some(match s {
        "km" => "kilometers",
        "m" => "meters",
        "cm" => "centimeters",
        "mm" => "millimeters",
        "kg" => "kilograms",
        "g" => "grams",
        "lb" | "lbs" => "pounds",
        "mph" => "miles per hour",
        "kph" => "kilometers per hour",
        "ft" => "feet",
        "mi" => "miles",
        "h" | "hr" | "hrs" => "hours",
        "min" => "minutes",
        "s" | "sec" => "seconds",
        "ms" => "milliseconds",
        "GB" => "gigabytes",
        "MB" => "megabytes",
        "kB" | "KB" => "kilobytes",
        "TB" => "terabytes",
        "GHz" => "gigahertz",
        "MHz" => "megahertz",
        "kHz" => "kilohertz",
        "Hz" => "hertz",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::normalize as n;

    #[test]
    fn numbers() {
        assert_eq!(n("I have 3 cats."), "I have three cats.");
        assert_eq!(
            n("It costs 1,250 points"),
            "It costs one thousand two hundred fifty points"
        );
        assert_eq!(n("pi is 3.14"), "pi is three point one four");
        assert_eq!(n("it was -5 outside"), "it was minus five outside");
        assert_eq!(n("pages 10-20"), "pages ten to twenty");
    }

    #[test]
    fn ordinals() {
        assert_eq!(
            n("the 1st and 22nd and 103rd"),
            "the first and twenty-second and one hundred third"
        );
    }

    #[test]
    fn currency() {
        assert_eq!(n("$12.50"), "twelve dollars and fifty cents");
        assert_eq!(n("It's $1."), "It's one dollar.");
        assert_eq!(n("only $0.99"), "only ninety-nine cents");
        assert_eq!(
            n("£20 and €3.05"),
            "twenty pounds and three euros and five cents"
        );
        assert_eq!(n("$5 million"), "five million dollars");
        assert_eq!(n("$2.5 billion,"), "two point five billion dollars,");
    }

    #[test]
    fn percentages() {
        assert_eq!(n("up 12% today"), "up twelve percent today");
        assert_eq!(n("a 2.5% rate"), "a two point five percent rate");
    }

    #[test]
    fn dates() {
        assert_eq!(
            n("on 2024-03-15."),
            "on March fifteenth, twenty twenty-four."
        );
        assert_eq!(n("due 7/4/1999"), "due July fourth, nineteen ninety-nine");
        assert_eq!(
            n("on March 5, 2024 we"),
            "on March fifth twenty twenty-four we"
        );
        assert_eq!(n("by Jan 3rd"), "by January third");
    }

    #[test]
    fn times() {
        assert_eq!(n("at 3:30 pm"), "at three thirty p m");
        assert_eq!(n("at 7:05am,"), "at seven oh five a m,");
        assert_eq!(n("at 9:00"), "at nine o'clock");
        assert_eq!(n("at 15:00"), "at fifteen hundred");
        assert_eq!(n("at 5pm"), "at five p m");
        assert_eq!(n("at 3.30 p.m."), "at three thirty p m.");
        assert_eq!(n("3.30 today"), "three point three zero today");
    }

    #[test]
    fn phone_numbers() {
        assert_eq!(
            n("call 555-123-4567"),
            "call five five five, one two three, four five six seven"
        );
        assert_eq!(
            n("call (555) 123-4567."),
            "call five five five, one two three, four five six seven."
        );
        assert_eq!(
            n("+1-800-555-0199"),
            "plus one, eight zero zero, five five five, zero one nine nine"
        );
    }

    #[test]
    fn abbreviations() {
        assert_eq!(n("Dr. Smith is here."), "Doctor Smith is here.");
        assert_eq!(n("Mr. and Mrs. Jones"), "Mister and Missus Jones");
        assert_eq!(n("St. Louis"), "Saint Louis");
        assert_eq!(n("on Main St."), "on Main Street");
        assert_eq!(n("apples, pears, etc. and"), "apples, pears, et cetera and");
        assert_eq!(n("No. 5"), "number five");
    }

    #[test]
    fn emails_and_urls() {
        assert_eq!(
            n("mail jane.doe@example.com."),
            "mail jane dot doe at example dot com."
        );
        assert_eq!(
            n("see https://www.rust-lang.org/learn"),
            "see w w w dot rust dash lang dot org slash learn"
        );
        assert_eq!(n("visit example.com today"), "visit example dot com today");
    }

    #[test]
    fn mixed_tokens_and_symbols() {
        assert_eq!(n("COVID-19 & flu"), "COVID nineteen and flu");
        assert_eq!(n("run 5km"), "run five kilometers");
        assert_eq!(n("plain words stay"), "plain words stay");
    }
}
