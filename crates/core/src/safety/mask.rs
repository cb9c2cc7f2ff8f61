//! A cheap local masker for the numbers a shopper should never have sent: card numbers and phone numbers
//! become `{CREDIT_DEBIT_CARD_NUMBER}` and `{PHONE}` (the placeholders a Bedrock guardrail's
//! `ANONYMIZE` action writes), at the parse, before the text reaches retrieval, the typing cache, the
//! logs, the model or the store. The input guardrail, when one is configured, still checks the masked text
//! for everything else it knows (names, addresses, e-mail).
//!
//! A number is a candidate only when it stands alone (no ASCII letter or digit touches it, and it does not follow
//! `.`, `,` or `/`), its digits in groups separated by single spaces or dashes:
//! - **card**: 13 to 19 digits, first digit 2 to 6 (the card networks' major industry identifiers),
//!   valid under the Luhn check, ungrouped or in groups of 4 (the last 1 to 4), 4-6-5 or 4-6-4;
//! - **phone**: a Japanese number (`0` + 9 digits, or `050`/`070`/`080`/`090` + 8, ungrouped or in two to
//!   four groups), or `+` and 8 to 15 digits (E.164).
//!
//! So an ASIN (`B0UZUMAKI1`), an order id (`112-4433221-7788990`), an ISBN (`978-4-08-882023-1`), a price
//! (`¥1,200`) or a date (`2026-12-03`) is left as written.

use std::borrow::Cow;

/// What a card number becomes.
pub const CARD: &str = "{CREDIT_DEBIT_CARD_NUMBER}";
/// What a phone number becomes.
pub const PHONE: &str = "{PHONE}";

/// `text` with every card and phone number replaced by its placeholder. Borrows when there is none (the
/// common case costs one pass over the bytes).
pub fn mask_numbers(text: &str) -> Cow<'_, str> {
    if text.bytes().filter(u8::is_ascii_digit).count() < 9 {
        return Cow::Borrowed(text);
    }
    let mut out = String::new();
    let mut copied = 0;
    for run in standalone_numbers(text) {
        if let Some(placeholder) = classify(run.plus, &run.groups) {
            out.push_str(&text[copied..run.start]);
            out.push_str(placeholder);
            copied = run.end;
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// A number standing alone in a text: its byte range, whether a `+` leads it, its digit groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberRun<'a> {
    pub start: usize,
    pub end: usize,
    pub plus: bool,
    pub groups: Vec<&'a str>,
}

/// Every number in `text` that stands alone (the module docs' rule: no ASCII letter or digit touches it, it
/// does not follow `.`, `,` or `/`), in order, as digit groups separated by single spaces or dashes. What a
/// number is (card, phone, neither) is the caller's rule; the local guardrail emulator scans the same way.
pub fn standalone_numbers(text: &str) -> impl Iterator<Item = NumberRun<'_>> {
    let b = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            let plus = b[i] == b'+' && b.get(i + 1).is_some_and(u8::is_ascii_digit);
            if !(plus || b[i].is_ascii_digit()) {
                i += 1;
                continue;
            }
            let start = i;
            let mut j = if plus { i + 1 } else { i };
            let mut groups: Vec<&str> = Vec::new();
            loop {
                let g = j;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
                groups.push(&text[g..j]);
                let sep = j < b.len() && (b[j] == b' ' || b[j] == b'-');
                if sep && b.get(j + 1).is_some_and(u8::is_ascii_digit) {
                    j += 1;
                } else {
                    break;
                }
            }
            i = j.max(i + 1);
            let before = text[..start].chars().next_back();
            let touches_before = before.is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ',' | '/'));
            let after = text[j..].chars().next();
            let touches_after = after.is_some_and(|c| c.is_ascii_alphanumeric())
                || (after.is_some_and(|c| matches!(c, '.' | ',' | '/'))
                    && b.get(j + 1).is_some_and(u8::is_ascii_digit));
            if !touches_before && !touches_after {
                return Some(NumberRun { start, end: j, plus, groups });
            }
        }
        None
    })
}

/// The Luhn check (ISO/IEC 7812) over ASCII digits.
fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(k, d)| {
            let d = u32::from(d - b'0');
            if k % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The placeholder for a number written as `groups` (after a `+` when `plus`), if it is a card or a phone.
fn classify(plus: bool, groups: &[&str]) -> Option<&'static str> {
    let digits: String = groups.concat();
    let n = digits.len();
    if plus {
        return (8..=15).contains(&n).then_some(PHONE);
    }
    let first = digits.as_bytes().first().copied().unwrap_or(b'0');
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let card_shape = lens.len() == 1
        || lens == [4, 6, 5]
        || lens == [4, 6, 4]
        || (lens.len() >= 3
            && lens[..lens.len() - 1].iter().all(|l| *l == 4)
            && lens.last().is_some_and(|l| (1..=4).contains(l)));
    if card_shape && (13..=19).contains(&n) && (b'2'..=b'6').contains(&first) && luhn(&digits) {
        return Some(CARD);
    }
    let mobile = ["050", "070", "080", "090"].iter().any(|p| digits.starts_with(p));
    let phone_shape = lens.len() <= 4 && lens.iter().all(|l| *l >= 2 || lens.len() == 1);
    if phone_shape && first == b'0' && !digits.starts_with("00") && (n == 10 || (n == 11 && mobile)) {
        return Some(PHONE);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_and_phone_numbers_are_masked_in_english_and_japanese() {
        assert_eq!(
            mask_numbers("My card is 4111 1111 1111 1111, call me at 090-1234-5678."),
            "My card is {CREDIT_DEBIT_CARD_NUMBER}, call me at {PHONE}."
        );
        assert_eq!(
            mask_numbers("電話は03-1234-5678か09012345678、カードは4111-1111-1111-1111です"),
            "電話は{PHONE}か{PHONE}、カードは{CREDIT_DEBIT_CARD_NUMBER}です"
        );
        assert_eq!(
            mask_numbers("amex 3782 822463 10005 or +81 90 1234 5678"),
            "amex {CREDIT_DEBIT_CARD_NUMBER} or {PHONE}"
        );
    }

    #[test]
    fn numbers_a_store_prints_are_left_as_written() {
        for text in [
            "B0UZUMAKI1 is in stock",
            "Your order 112-4433221-7788990 has shipped",
            "Order 11244332217788990",
            "Only ¥1,200 (税込1,320円)",
            "ISBN 9784088820231 or 978-4-08-882023-1",
            "Released 2026-12-03, 100 yen per point",
            "pi is 3.14159265358979",
            "4111 1111 1111 1112 fails the Luhn check",
        ] {
            assert!(matches!(mask_numbers(text), Cow::Borrowed(_)), "{text}: {}", mask_numbers(text));
        }
    }
}
