//! Positions and titles, as shoppers write them.

use super::*;

fn ord(text: &str) -> Option<Ordinal> {
    ordinals(&fold(text)).first().map(|o| o.ordinal)
}

#[test]
fn english_positions_in_the_forms_shoppers_write_them() {
    for (text, want) in [
        ("the last one please", Some(Ordinal::Last)),
        ("what about the last?", Some(Ordinal::Last)),
        ("the final one", Some(Ordinal::Last)),
        ("the middle one", Some(Ordinal::Middle)),
        ("tell me about the one in the middle", Some(Ordinal::Middle)),
        ("the one at the end", Some(Ordinal::Last)),
        ("#2?", Some(Ordinal::Nth(2))),
        ("# 3 looks good", Some(Ordinal::Nth(3))),
        ("no. 2 - tell me more", Some(Ordinal::Nth(2))),
        ("No.1 please", Some(Ordinal::Nth(1))),
        ("number two", Some(Ordinal::Nth(2))),
        ("option 3", Some(Ordinal::Nth(3))),
        ("the second title", Some(Ordinal::Nth(2))),
        ("the second one you mentioned", Some(Ordinal::Nth(2))),
        ("the very first one", Some(Ordinal::Nth(1))),
        ("tell me abotu the thrid one", Some(Ordinal::Nth(3))),
        ("the frist one", Some(Ordinal::Nth(1))),
        ("the second to last one", Some(Ordinal::NthFromLast(2))),
        ("second-to-last", Some(Ordinal::NthFromLast(2))),
        ("the penultimate one", Some(Ordinal::NthFromLast(2))),
        ("the latter", Some(Ordinal::Latter)),
        ("the former", Some(Ordinal::Former)),
        ("the top pick", Some(Ordinal::Nth(1))),
        ("ＴＨＥ　ＦＩＲＳＴ　ＯＮＥ", Some(Ordinal::Nth(1))),
    ] {
        assert_eq!(ord(text), want, "{text}");
    }
}

#[test]
fn words_that_look_like_positions_but_are_not_about_the_list_are_left_alone() {
    for text in [
        "is the first volume in stock?",
        "at first I thought it was horror",
        "last time I bought manga here",
        "does it have eight volumes?",
        "back and forth",
        "tell me about the first two",
        "is it ok for middle school?",
        "no one told me",
        "wait a second",
        "the last volume came out when?",
        "first of all, thanks",
    ] {
        assert_eq!(ord(text), None, "{text}");
    }
}

#[test]
fn japanese_positions_in_the_forms_shoppers_write_them() {
    for (text, want) in [
        ("2つ目について", Some(Ordinal::Nth(2))),
        ("２つ目", Some(Ordinal::Nth(2))),
        ("ふたつめのやつ", Some(Ordinal::Nth(2))),
        ("二番目のは?", Some(Ordinal::Nth(2))),
        ("２番目", Some(Ordinal::Nth(2))),
        ("3番の作品", Some(Ordinal::Nth(3))),
        ("1個目どんなの？", Some(Ordinal::Nth(1))),
        ("最初のやつ", Some(Ordinal::Nth(1))),
        ("一番最初のは？", Some(Ordinal::Nth(1))),
        ("最後の作品", Some(Ordinal::Last)),
        ("最後のは？", Some(Ordinal::Last)),
        ("ラストのやつ", Some(Ordinal::Last)),
        ("真ん中のってどんな漫画？", Some(Ordinal::Middle)),
        ("まんなかの", Some(Ordinal::Middle)),
        ("最後から2番目", Some(Ordinal::NthFromLast(2))),
        ("上から2つ目", Some(Ordinal::Nth(2))),
        ("後者について", Some(Ordinal::Latter)),
    ] {
        assert_eq!(ord(text), want, "{text}");
    }
    for text in ["最後まで読みました", "最初の巻はいくら？", "1番人気はどれ？", "12番目", "ラストシーンが泣ける"]
    {
        let got = ord(text);
        assert!(got.is_none() || text == "12番目", "{text}: {got:?}");
    }
}

#[test]
fn an_ordinal_points_into_the_list_only_where_it_is_unambiguous() {
    assert_eq!(Ordinal::Middle.index(3), Some(1));
    assert_eq!(Ordinal::Middle.index(5), Some(2));
    assert_eq!(Ordinal::Middle.index(4), None);
    assert_eq!(Ordinal::Latter.index(2), Some(1));
    assert_eq!(Ordinal::Latter.index(3), None);
    assert_eq!(Ordinal::Former.index(2), Some(0));
    assert_eq!(Ordinal::NthFromLast(2).index(3), Some(1));
    assert_eq!(Ordinal::NthFromLast(4).index(3), None);
    assert_eq!(Ordinal::Nth(4).index(3), None);
    assert_eq!(Ordinal::Nth(0).index(3), None);
    assert_eq!(Ordinal::Last.index(0), None);
}

fn listed() -> Vec<Listed> {
    [
        ("B0AAAAAAA1", "Paper Diary", "紙の日記"),
        ("B0BBBBBBB2", "Paper Kitchen", "紙の食卓"),
        ("B0CCCCCCC3", "Last Dragon", "最後の竜"),
    ]
    .iter()
    .map(|(a, en, ja)| Listed { asin: Asin::parse(*a).unwrap(), title_en: (*en).into(), title_ja: (*ja).into() })
    .collect()
}

fn titled(text: &str) -> Vec<(&'static str, bool)> {
    let l = listed();
    title_mentions(&fold(text), &l)
        .into_iter()
        .map(|m| {
            let i = l.iter().position(|x| x.asin == m.asin).unwrap();
            (["B0AAAAAAA1", "B0BBBBBBB2", "B0CCCCCCC3"][i], m.whole)
        })
        .collect()
}

#[test]
fn titles_are_found_whole_whatever_the_case_width_or_a_slip() {
    assert_eq!(titled("tell me more about Paper Diary"), [("B0AAAAAAA1", true)]);
    assert_eq!(titled("PAPER KITCHEN?"), [("B0BBBBBBB2", true)]);
    assert_eq!(titled("ｐａｐｅｒ　ｄｉａｒｙ"), [("B0AAAAAAA1", true)]);
    assert_eq!(titled("what's last dargon about"), [("B0CCCCCCC3", true)]);
    assert_eq!(titled("紙の日記ってどんな話？"), [("B0AAAAAAA1", true)]);
    assert_eq!(titled("最後の竜について教えて"), [("B0CCCCCCC3", true)]);
    assert_eq!(titled("Paper Diaryについて教えて"), [("B0AAAAAAA1", true)]);
}

#[test]
fn a_part_of_a_title_counts_only_when_one_listed_title_has_it() {
    assert_eq!(titled("the diary one?"), [("B0AAAAAAA1", false)]);
    assert_eq!(titled("the kitchen one"), [("B0BBBBBBB2", false)]);
    assert_eq!(titled("日記のやつ"), [("B0AAAAAAA1", false)]);
    assert!(titled("the paper one").is_empty(), "Paper is in two titles");
    assert!(titled("the last one").is_empty(), "Last names a position");
    assert!(titled("最後のやつ").is_empty(), "最後 names a position");
    assert_eq!(titled("diary or kitchen?").len(), 2);
}

#[test]
fn titles_are_read_from_the_answer_that_listed_the_products() {
    let asins: Vec<Asin> =
        ["B03KAY3107", "B04G6OLIWV", "B051ECPZS6", "B0ZZZZZZZ9"].iter().map(|a| Asin::parse(*a).unwrap()).collect();
    let en = "Here are three I think you'll enjoy:\n1. Paper Diary (B03KAY3107): a complete horror series.\n\
              2. **Star Hunter** (ASIN B04G6OLIWV) is scary.\nYou might also enjoy Ghost Requiem (ASIN: B051ECPZS6).";
    let got: Vec<String> = listed_from_answer(en, &asins).into_iter().map(|l| l.title_en).collect();
    assert_eq!(got, ["Paper Diary", "Star Hunter", "Ghost Requiem", ""]);
    let ja =
        "おすすめの作品はこちらです。\n1. 紙の日記(B03KAY3107):全56巻。\n2. 「星降る狩人」（B04G6OLIWV）も人気です。";
    let got: Vec<String> = listed_from_answer(ja, &asins[..2]).into_iter().map(|l| l.title_ja).collect();
    assert_eq!(got, ["紙の日記", "星降る狩人"]);
}
