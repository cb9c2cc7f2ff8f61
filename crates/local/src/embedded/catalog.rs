//! The embedded store catalog: a seeded, reproducible manga catalog (titles from [`super::corpus`]) with what
//! the product services answer (details, review summaries, same-genre recommendations, promotions) and the
//! retrieval documents (one description per product, FAQ and policy pages in English and Japanese).
//!
//! The embedded services, the embedded retriever and the services' HTTP emulator all read one `Catalog`,
//! so a product the retriever mentions is one the product service knows.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Value, json};

use super::corpus::Generator;

/// The seed and size `mangaassist serve` and the bench use.
pub const DEFAULT_SEED: u64 = 42;
pub const DEFAULT_SIZE: usize = 300;

/// A retrieval document's kind: the field the retriever's intent filter applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocKind {
    Product,
    Faq,
    Policy,
}

impl DocKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Product => "product",
            Self::Faq => "faq",
            Self::Policy => "policy",
        }
    }
}

/// One retrieval document (one passage).
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// `product:<asin>`, `faq:<topic>:<lang>`, `policy:<topic>:<lang>`.
    pub id: String,
    pub kind: DocKind,
    pub text: String,
}

/// One product with everything the services answer about it.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogProduct {
    pub asin: String,
    pub title_en: String,
    pub title_ja: String,
    pub genre: &'static str,
    pub volumes: u32,
    /// Price of one volume.
    pub price_jpy: u32,
    pub in_stock: bool,
    pub complete: bool,
    #[serde(skip)]
    pub rating: f32,
    #[serde(skip)]
    pub review_count: u32,
}

/// The generated catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    products: Vec<CatalogProduct>,
    by_asin: HashMap<String, usize>,
    documents: Vec<Document>,
}

const PRICES: [u32; 9] = [484, 528, 550, 594, 660, 715, 770, 880, 990];

/// The genre's Japanese name.
pub fn genre_ja(genre: &str) -> &'static str {
    match genre {
        "horror" => "ホラー",
        "fantasy" => "ファンタジー",
        "romance" => "恋愛",
        "sports" => "スポーツ",
        "mystery" => "ミステリー",
        "sci-fi" => "SF",
        "slice-of-life" => "日常系",
        _ => "アクション",
    }
}

fn blurb(genre: &str) -> (&'static str, &'static str) {
    match genre {
        "horror" => (
            "A creeping, atmospheric horror story in which an ordinary town hides something terrible.",
            "平凡な町に潜む恐怖をじわじわと描くホラー作品です。",
        ),
        "fantasy" => (
            "An epic fantasy adventure of swords, magic and a long journey across a vast world.",
            "剣と魔法の広大な世界を旅する壮大なファンタジーです。",
        ),
        "romance" => (
            "A heartfelt romance about two students who slowly learn to be honest with each other.",
            "素直になれない二人の心の距離を丁寧に描く恋愛物語です。",
        ),
        "sports" => (
            "A sports drama about a weak team that trains hard to reach the national tournament.",
            "弱小チームが全国大会を目指して奮闘するスポーツ漫画です。",
        ),
        "mystery" => (
            "A mystery in which a sharp-eyed detective untangles one impossible case after another.",
            "鋭い観察眼を持つ探偵が不可能犯罪に挑むミステリーです。",
        ),
        "sci-fi" => (
            "A science-fiction saga of starships, androids and a war at the edge of the galaxy.",
            "宇宙船とアンドロイドが登場する、銀河の果ての戦いを描くSF大作です。",
        ),
        "slice-of-life" => (
            "A gentle slice-of-life story about friends, good food and small everyday joys.",
            "友人との日々やおいしい食事のささやかな幸せを描く日常系漫画です。",
        ),
        _ => (
            "A fast-paced action series full of fierce battles and rivals who become friends.",
            "激しいバトルとライバルとの友情が熱いアクション漫画です。",
        ),
    }
}

/// `(kind, topic, English, Japanese)`: the store's help pages.
const PAGES: [(DocKind, &str, &str, &str); 11] = [
    (
        DocKind::Policy,
        "shipping",
        "Shipping policy. Orders of 2,000 yen or more ship free within Japan; smaller orders pay a 410 yen \
         shipping fee. Standard delivery takes one to two days to Honshu; Hokkaido, Kyushu, Okinawa and remote \
         islands take two to four days. Pre-orders ship on the release date.",
        "配送について。2,000円以上のご注文は日本国内送料無料です。2,000円未満のご注文には送料410円がかかります。\
         本州へは通常1〜2日でお届けします。北海道・九州・沖縄・離島へは2〜4日かかります。予約商品は発売日に発送します。",
    ),
    (
        DocKind::Policy,
        "returns",
        "Returns policy. Unopened items can be returned within 30 days of delivery for a full refund. Damaged or \
         misprinted copies are replaced free of charge: report them within 14 days with a photo. Digital \
         editions cannot be returned once downloaded.",
        "返品について。未開封の商品はお届けから30日以内であれば全額返金で返品できます。破損・落丁のある商品は\
         無料で交換します。お届けから14日以内に写真を添えてご連絡ください。電子書籍はダウンロード後の返品はできません。",
    ),
    (
        DocKind::Policy,
        "payment",
        "Payment methods. We accept credit cards (Visa, Mastercard, JCB, American Express), convenience store \
         payment, cash on delivery (330 yen fee) and gift cards. Convenience store payments must be completed \
         within three days or the order is cancelled.",
        "お支払い方法。クレジットカード(Visa、Mastercard、JCB、American Express)、コンビニ払い、代金引換\
         (手数料330円)、ギフトカードがご利用いただけます。コンビニ払いは3日以内にお支払いください。\
         期限を過ぎるとご注文はキャンセルされます。",
    ),
    (
        DocKind::Policy,
        "points",
        "Points program. Every purchase earns 1 point per 100 yen spent, and one point is worth 1 yen on your \
         next order. Points expire one year after your last purchase. Campaign points are added 30 days after \
         shipping.",
        "ポイントプログラム。お買い物100円ごとに1ポイントが貯まり、1ポイント1円として次回のご注文に使えます。\
         ポイントの有効期限は最後のご購入から1年間です。キャンペーンポイントは発送から30日後に付与されます。",
    ),
    (
        DocKind::Policy,
        "gift-wrap",
        "Gift wrapping. Gift wrap is available for 220 yen per order, with a free message card. Choose it at \
         checkout; the packing slip of a wrapped order shows no prices.",
        "ギフトラッピング。1注文につき220円でギフトラッピングを承ります。メッセージカードは無料です。\
         ご注文手続きの際にお選びください。ラッピングしたご注文の納品書には金額を記載しません。",
    ),
    (
        DocKind::Faq,
        "tracking",
        "How do I track my order? Open Your Orders and choose Track package; the tracking number appears once \
         the order has shipped. Orders usually ship within 24 hours.",
        "注文の配送状況を確認するには?「注文履歴」から「配送状況を確認」を選んでください。発送後に追跡番号が\
         表示されます。通常24時間以内に発送します。",
    ),
    (
        DocKind::Faq,
        "cancel",
        "Can I cancel my order? You can cancel an order in Your Orders until it ships. Pre-orders can be \
         cancelled at any time before the release date.",
        "注文をキャンセルできますか?発送前であれば「注文履歴」からキャンセルできます。予約注文は発売日の前日まで\
         いつでもキャンセルできます。",
    ),
    (
        DocKind::Faq,
        "coupons",
        "Why won't my coupon apply at checkout? Coupons apply only to eligible items, cannot be combined with \
         other coupons, and expire at 23:59 Japan time on the date shown.",
        "クーポンが使えないのはなぜですか?クーポンは対象商品のみに適用され、他のクーポンとの併用はできません。\
         有効期限は表示された日の日本時間23時59分までです。",
    ),
    (
        DocKind::Faq,
        "preorders",
        "How do pre-orders work? A pre-ordered volume is charged when it ships and arrives on or near its \
         release date. You pay the lowest price offered between your order and the release.",
        "予約注文の仕組みは?予約した巻は発送時に請求され、発売日頃にお届けします。ご予約から発売日までの\
         最低価格が適用されます。",
    ),
    (
        DocKind::Faq,
        "box-sets",
        "Do you sell complete sets? Many finished series are available as complete box sets, about 10 percent \
         cheaper than buying each volume.",
        "全巻セットはありますか?完結済みの多くのシリーズで全巻セットを販売しており、1巻ずつ買うより約10%お得です。",
    ),
    (
        DocKind::Faq,
        "digital",
        "Are digital editions available? Most series have digital editions, readable in the app on phones, \
         tablets and PCs right after purchase.",
        "電子書籍版はありますか?ほとんどのシリーズに電子書籍版があり、購入後すぐにスマートフォン・タブレット・\
         PCのアプリで読めます。",
    ),
];

/// FNV-1a, for stable per-user orderings.
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

impl Default for Catalog {
    fn default() -> Self {
        Self::generate(DEFAULT_SEED, DEFAULT_SIZE)
    }
}

impl Catalog {
    /// `size` products from `seed` (fewer if two generated ASINs collide), and the help pages.
    pub fn generate(seed: u64, size: usize) -> Self {
        let base = Generator::new(seed, size).catalog;
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x0063_6174_616c_6f67);
        let mut products = Vec::with_capacity(base.len());
        let mut by_asin = HashMap::with_capacity(base.len());
        for p in base {
            let rating = (rng.f32() * 2.0 + 3.0) * 10.0;
            let product = CatalogProduct {
                price_jpy: PRICES[rng.usize(..PRICES.len())],
                in_stock: rng.f32() < 0.85,
                complete: rng.bool(),
                rating: rating.round() / 10.0,
                review_count: rng.u32(0..=2500),
                asin: p.asin,
                title_en: p.title_en,
                title_ja: p.title_ja,
                genre: p.genre,
                volumes: p.volumes,
            };
            if by_asin.contains_key(&product.asin) {
                continue;
            }
            by_asin.insert(product.asin.clone(), products.len());
            products.push(product);
        }
        let mut documents: Vec<Document> = products
            .iter()
            .map(|p| Document { id: format!("product:{}", p.asin), kind: DocKind::Product, text: description(p) })
            .collect();
        for (kind, topic, en, ja) in PAGES {
            for (lang, text) in [("en", en), ("ja", ja)] {
                documents.push(Document { id: format!("{}:{topic}:{lang}", kind.as_str()), kind, text: text.into() });
            }
        }
        Self { products, by_asin, documents }
    }

    pub fn products(&self) -> &[CatalogProduct] {
        &self.products
    }

    pub fn product(&self, asin: &str) -> Option<&CatalogProduct> {
        self.by_asin.get(asin).map(|&i| &self.products[i])
    }

    /// Product descriptions, then the FAQ and policy pages.
    pub fn documents(&self) -> &[Document] {
        &self.documents
    }

    /// The products service's answer: `asin`, `title_en`, `title_ja`, `genre`, `volumes`, `price_jpy`,
    /// `in_stock`, `complete`.
    pub fn product_json(&self, asin: &str) -> Option<Value> {
        self.product(asin).and_then(|p| serde_json::to_value(p).ok())
    }

    /// The reviews service's answer: rating, count, and a one-line summary.
    pub fn reviews_json(&self, asin: &str) -> Option<Value> {
        let p = self.product(asin)?;
        let summary = if p.review_count == 0 {
            "No reviews yet.".to_owned()
        } else if p.rating >= 4.5 {
            format!("Readers love {}: gripping from the first volume, with beautiful art.", p.title_en)
        } else if p.rating >= 3.8 {
            format!("Most readers enjoy {}; a few find the middle volumes slow.", p.title_en)
        } else {
            format!("Mixed reviews for {}: strong art, uneven story.", p.title_en)
        };
        Some(json!({ "asin": p.asin, "rating": p.rating, "count": p.review_count, "summary": summary }))
    }

    /// The recommendations service's answer: up to five other in-stock products of the seed's genre, in an
    /// order that depends on the user.
    pub fn recommendations_json(&self, seed_asin: &str, user: &str) -> Option<Value> {
        let seed = self.product(seed_asin)?;
        let mut same: Vec<&CatalogProduct> =
            self.products.iter().filter(|p| p.genre == seed.genre && p.asin != seed.asin && p.in_stock).collect();
        same.sort_by_key(|p| fnv(&[user, &p.asin]));
        let items: Vec<Value> = same
            .iter()
            .take(5)
            .map(|p| json!({ "asin": p.asin, "title_en": p.title_en, "title_ja": p.title_ja, "genre": p.genre }))
            .collect();
        Some(json!({ "seed": seed.asin, "user": user, "items": items }))
    }

    /// The promotions service's answer for a placement (`manga-home` or `checkout`); `None` for others.
    pub fn promotions_json(&self, placement: &str) -> Option<Value> {
        // The genre on sale this week: the first product's, so it is stable for a seed.
        let featured = self.products.first().map(|p| p.genre);
        let promos = match placement {
            mangaassist_core::cache::PROMO_PLACEMENT => {
                let mut v = vec![json!({
                    "id": "points-x10",
                    "title": "10x points on every first volume this week",
                    "title_ja": "今週は全作品の第1巻がポイント10倍",
                })];
                if let Some(g) = featured {
                    v.push(json!({
                        "id": format!("sale-{g}"),
                        "title": format!("20% off {g} manga until Sunday"),
                        "title_ja": format!("{}漫画が日曜日まで20%オフ", genre_ja(g)),
                        "genre": g,
                        "discount_pct": 20,
                    }));
                }
                v
            }
            "checkout" => vec![json!({
                "id": "free-wrap",
                "title": "Free gift wrapping on orders of 5,000 yen or more",
                "title_ja": "5,000円以上のご注文でギフトラッピング無料",
            })],
            _ => return None,
        };
        Some(json!({ "placement": placement, "promotions": promos }))
    }
}

fn description(p: &CatalogProduct) -> String {
    let (en, ja) = blurb(p.genre);
    let status = if p.complete { "complete" } else { "ongoing" };
    let stock = if p.in_stock { "in stock" } else { "currently out of stock" };
    let status_ja = if p.complete { "完結済み" } else { "連載中" };
    format!(
        "{} ({}) is a {} {} manga series in {} volumes. ASIN {}. {en} Price {} yen per volume; {stock}. \
         Rated {:.1} by {} readers. {}は全{}巻の{}漫画({status_ja})です。{ja}",
        p.title_en,
        p.title_ja,
        status,
        p.genre,
        p.volumes,
        p.asin,
        p.price_jpy,
        p.rating,
        p.review_count,
        p.title_ja,
        p.volumes,
        genre_ja(p.genre),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_is_reproducible_from_its_seed() {
        let (a, b) = (Catalog::generate(7, 50), Catalog::generate(7, 50));
        assert_eq!(a.documents(), b.documents());
        assert_ne!(a.documents(), Catalog::generate(8, 50).documents());
    }

    #[test]
    fn every_product_has_details_reviews_and_a_description() {
        let c = Catalog::default();
        assert!(c.products().len() > 290);
        for p in c.products() {
            let d = c.product_json(&p.asin).unwrap();
            assert_eq!(d["asin"], p.asin.as_str());
            for field in ["title_en", "title_ja", "genre", "volumes", "price_jpy", "in_stock"] {
                assert!(d.get(field).is_some(), "{field} missing");
            }
            let r = c.reviews_json(&p.asin).unwrap();
            assert!(r["summary"].as_str().is_some_and(|s| !s.is_empty()));
            assert!((3.0..=5.0).contains(&r["rating"].as_f64().unwrap()));
        }
        assert!(c.product_json("B0NOTTHERE").is_none());
        let kinds = |k: DocKind| c.documents().iter().filter(|d| d.kind == k).count();
        assert_eq!(kinds(DocKind::Product), c.products().len());
        assert_eq!(kinds(DocKind::Policy), 10);
        assert_eq!(kinds(DocKind::Faq), 12);
    }

    #[test]
    fn recommendations_share_the_seed_genre_and_exclude_the_seed() {
        let c = Catalog::default();
        let seed = &c.products()[0];
        let r = c.recommendations_json(&seed.asin, "u1").unwrap();
        let items = r["items"].as_array().unwrap();
        assert!(!items.is_empty() && items.len() <= 5);
        for i in items {
            assert_eq!(i["genre"], seed.genre);
            assert_ne!(i["asin"], seed.asin.as_str());
        }
        assert!(c.recommendations_json("B0NOTTHERE", "u1").is_none());
    }

    #[test]
    fn the_chat_placement_has_promotions_and_an_unknown_one_has_none() {
        let c = Catalog::default();
        let p = c.promotions_json(mangaassist_core::cache::PROMO_PLACEMENT).unwrap();
        assert!(p["promotions"].as_array().is_some_and(|a| !a.is_empty()));
        assert!(c.promotions_json("nowhere").is_none());
    }
}
