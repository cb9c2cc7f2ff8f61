//! The embedded retriever: the core's `Retriever` over an in-RAM `tantivy` index of the catalog's product
//! descriptions and its FAQ and policy pages, standing in for OpenSearch in local runs, the bench and tests.
//!
//! Each passage is indexed twice: in `text` with tantivy's default tokenizer (words, lower-cased: English),
//! and in `text_cjk` with [`CjkBigramTokenizer`] (overlapping character bigrams of kana, kanji and hangul
//! runs: Japanese has no spaces to split on). A query is tokenized the same two ways and its terms are
//! OR-ed, scored by BM25. The intent filter is a `kind` term (`product`, `faq`, `policy`) that must match, and
//! scores are divided by the best hit's, as in the OpenSearch adapter. Token counts are computed once, at
//! indexing. Searching ~300 short passages takes microseconds, so it runs inline on the caller's task.

use std::collections::HashSet;

use mangaassist_core::intent::Intent;
use mangaassist_core::ports::sources::Passage;
use mangaassist_core::ports::sources::kinds_for;
use mangaassist_core::ports::sources::{Retriever, SourceError};
use mangaassist_core::tokenizer::{Cl100k, Tokenizer as _};
use tantivy::collector::TopDocs;
use tantivy::directory::RamDirectory;
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TEXT, TextFieldIndexing, TextOptions, Value as _,
};
use tantivy::tokenizer::{Token, TokenStream, Tokenizer};
use tantivy::{Index, IndexReader, ReloadPolicy, TantivyDocument, Term};

use crate::embedded::catalog::{Catalog, DocKind, Document};
use crate::embedded::services::Latency;

const CJK_TOKENIZER: &str = "cjk_bigram";
/// The indexer's memory budget; the catalog's index is far smaller.
const INDEX_MEMORY: usize = 15_000_000;

/// Whether `c` belongs to a script written without spaces (kana, CJK ideographs, hangul).
fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{3005}'..='\u{3007}'       // 々 〆 〇
        | '\u{3040}'..='\u{30FF}'     // hiragana, katakana (with ー)
        | '\u{31F0}'..='\u{31FF}'     // katakana phonetic extensions
        | '\u{3400}'..='\u{4DBF}'     // CJK extension A
        | '\u{4E00}'..='\u{9FFF}'     // CJK unified ideographs
        | '\u{AC00}'..='\u{D7AF}'     // hangul syllables
        | '\u{F900}'..='\u{FAFF}'     // CJK compatibility ideographs
        | '\u{FF66}'..='\u{FF9F}'     // half-width katakana
        | '\u{20000}'..='\u{2FA1F}') // CJK extensions B and later
}

/// Overlapping bigrams of each run of CJK characters (`鋼の狩人` -> `鋼の`, `の狩`, `狩人`); a run of one
/// character is its own token. Everything else is skipped: the `text` field covers it.
#[derive(Debug, Clone, Default)]
pub struct CjkBigramTokenizer {
    tokens: Vec<Token>,
}

/// The tokens of one text.
#[derive(Debug)]
pub struct CjkBigramStream<'a> {
    tokens: &'a mut [Token],
    next: usize,
    empty: Token,
}

impl CjkBigramTokenizer {
    fn fill(&mut self, text: &str) {
        self.tokens.clear();
        let mut run: Vec<(usize, char)> = Vec::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if is_cjk(c) {
                run.push((i, c));
            }
            let run_ends = !is_cjk(c) || chars.peek().is_none_or(|&(_, n)| !is_cjk(n));
            if run_ends && !run.is_empty() {
                self.push_run(&run);
                run.clear();
            }
        }
    }

    fn push_run(&mut self, run: &[(usize, char)]) {
        let end_of = |&(i, c): &(usize, char)| i + c.len_utf8();
        if let [only] = run {
            self.push(only.0, end_of(only), only.1.to_string());
            return;
        }
        for pair in run.windows(2) {
            if let [a, b] = pair {
                self.push(a.0, end_of(b), [a.1, b.1].iter().collect());
            }
        }
    }

    fn push(&mut self, offset_from: usize, offset_to: usize, text: String) {
        let position = self.tokens.len();
        self.tokens.push(Token { offset_from, offset_to, position, text, position_length: 1 });
    }
}

impl Tokenizer for CjkBigramTokenizer {
    type TokenStream<'a> = CjkBigramStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> CjkBigramStream<'a> {
        self.fill(text);
        CjkBigramStream { tokens: &mut self.tokens, next: 0, empty: Token::default() }
    }
}

impl TokenStream for CjkBigramStream<'_> {
    fn advance(&mut self) -> bool {
        if self.next < self.tokens.len() {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn token(&self) -> &Token {
        self.next.checked_sub(1).and_then(|i| self.tokens.get(i)).unwrap_or(&self.empty)
    }

    fn token_mut(&mut self) -> &mut Token {
        match self.next.checked_sub(1) {
            Some(i) if i < self.tokens.len() => &mut self.tokens[i],
            _ => &mut self.empty,
        }
    }
}

/// The index could not be built.
#[derive(Debug, thiserror::Error)]
#[error("building the embedded search index failed")]
pub struct IndexError(#[from] tantivy::TantivyError);

#[derive(Debug, Clone, Copy)]
struct Fields {
    ord: Field,
    kind: Field,
    text: Field,
    text_cjk: Field,
}

/// One search result, with the document it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    pub kind: DocKind,
    pub chunk: Passage,
}

/// `Retriever` over an in-RAM tantivy index.
pub struct EmbeddedRetriever {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    /// Indexed documents with their chunks (token counts included), by ordinal.
    docs: Vec<(String, DocKind, Passage)>,
    latency: Latency,
    /// `retrieve` calls so far (tests and the bench count the retrieval work).
    requests: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for EmbeddedRetriever {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedRetriever").field("docs", &self.docs.len()).field("latency", &self.latency).finish()
    }
}

impl EmbeddedRetriever {
    /// Indexes `catalog`'s documents (CPU work: call at start-up, not on a turn's path).
    pub fn build(catalog: &Catalog) -> Result<Self, IndexError> {
        Self::from_documents(catalog.documents())
    }

    /// Indexes `documents`.
    pub fn from_documents(documents: &[Document]) -> Result<Self, IndexError> {
        let mut sb = Schema::builder();
        let cjk = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default().set_tokenizer(CJK_TOKENIZER).set_index_option(IndexRecordOption::WithFreqs),
        );
        let fields = Fields {
            ord: sb.add_u64_field("ord", STORED | INDEXED),
            kind: sb.add_text_field("kind", STRING),
            text: sb.add_text_field("text", TEXT),
            text_cjk: sb.add_text_field("text_cjk", cjk),
        };
        let tokenizers = tantivy::tokenizer::TokenizerManager::default();
        tokenizers.register(CJK_TOKENIZER, CjkBigramTokenizer::default());
        let mut writer = Index::builder()
            .schema(sb.build())
            .tokenizers(tokenizers)
            .single_segment_index_writer(RamDirectory::create(), INDEX_MEMORY)?;
        let mut docs = Vec::with_capacity(documents.len());
        for (ord, d) in documents.iter().enumerate() {
            let mut doc = TantivyDocument::default();
            doc.add_u64(fields.ord, ord as u64);
            doc.add_text(fields.kind, d.kind.as_str());
            doc.add_text(fields.text, &d.text);
            doc.add_text(fields.text_cjk, &d.text);
            writer.add_document(doc)?;
            let chunk = Passage { content: d.text.clone(), score: 0.0, tokens: Some(Cl100k.count(&d.text)) };
            docs.push((d.id.clone(), d.kind, chunk));
        }
        let index = writer.finalize()?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(Self { index, reader, fields, docs, latency: Latency::ZERO, requests: Default::default() })
    }

    /// The same index answering after an artificial `latency` (the bench's latency profile).
    pub fn with_latency(mut self, latency: Latency) -> Self {
        self.latency = latency;
        self
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// `retrieve` calls so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    fn terms(&self, field: Field, query: &str) -> Result<Vec<Term>, tantivy::TantivyError> {
        let mut analyzer = self.index.tokenizer_for_field(field)?;
        let mut seen = HashSet::new();
        let mut terms = Vec::new();
        analyzer.token_stream(query).process(&mut |t: &Token| {
            if seen.insert(t.text.clone()) {
                terms.push(Term::from_field_text(field, &t.text));
            }
        });
        Ok(terms)
    }

    /// The best `top_k` documents for `query` among `kinds` (all kinds when `None`), best first, scores
    /// divided by the best one's. No artificial latency.
    pub fn search(&self, query: &str, kinds: Option<&[&str]>, top_k: usize) -> Result<Vec<Hit>, SourceError> {
        if top_k == 0 {
            return Ok(Vec::new());
        }
        let other = |e: tantivy::TantivyError| SourceError::Other(Box::new(e));
        let mut text_terms = self.terms(self.fields.text, query).map_err(other)?;
        text_terms.extend(self.terms(self.fields.text_cjk, query).map_err(other)?);
        if text_terms.is_empty() {
            return Ok(Vec::new());
        }
        let text_query: Box<dyn Query> = Box::new(BooleanQuery::new(
            text_terms
                .into_iter()
                .map(|t| (Occur::Should, Box::new(TermQuery::new(t, IndexRecordOption::WithFreqs)) as Box<dyn Query>))
                .collect(),
        ));
        let query: Box<dyn Query> = match kinds {
            None => text_query,
            Some(kinds) => {
                let kind_query = BooleanQuery::new(
                    kinds
                        .iter()
                        .map(|k| {
                            let t = Term::from_field_text(self.fields.kind, k);
                            (Occur::Should, Box::new(TermQuery::new(t, IndexRecordOption::Basic)) as Box<dyn Query>)
                        })
                        .collect(),
                );
                Box::new(BooleanQuery::new(vec![
                    (Occur::Must, text_query),
                    (Occur::Must, Box::new(ConstScoreQuery::new(Box::new(kind_query), 0.0))),
                ]))
            }
        };
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(top_k).order_by_score()).map_err(other)?;
        let best = top.first().map_or(0.0, |(s, _)| *s);
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let doc: TantivyDocument = searcher.doc(addr).map_err(other)?;
            let Some(ord) = doc.get_first(self.fields.ord).and_then(|v| v.as_u64()) else { continue };
            let Some((id, kind, chunk)) = usize::try_from(ord).ok().and_then(|o| self.docs.get(o)) else { continue };
            let score = if best > 0.0 { (score / best).clamp(0.0, 1.0) } else { 0.0 };
            hits.push(Hit { id: id.clone(), kind: *kind, chunk: Passage { score, ..chunk.clone() } });
        }
        Ok(hits)
    }
}

impl Retriever for EmbeddedRetriever {
    async fn retrieve(&self, query: &str, intent: Intent, top_k: usize) -> Result<Vec<Passage>, SourceError> {
        self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.latency.wait().await;
        Ok(self.search(query, kinds_for(intent), top_k)?.into_iter().map(|h| h.chunk).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<String> {
        let mut t = CjkBigramTokenizer::default();
        let mut out = Vec::new();
        t.token_stream(text).process(&mut |tok: &Token| out.push(tok.text.clone()));
        out
    }

    #[test]
    fn japanese_runs_become_overlapping_bigrams_and_latin_text_is_skipped() {
        assert_eq!(tokens("鋼の狩人"), ["鋼の", "の狩", "狩人"]);
        assert_eq!(tokens("Blade 竜 Moon 送料は?"), ["竜", "送料", "料は"]);
        assert!(tokens("plain English").is_empty());
    }

    #[test]
    fn bigram_offsets_point_at_their_characters() {
        let text = "a送料b";
        let mut t = CjkBigramTokenizer::default();
        let mut stream = t.token_stream(text);
        assert!(stream.advance());
        let tok = stream.token();
        assert_eq!(&text[tok.offset_from..tok.offset_to], "送料");
        assert!(!stream.advance());
    }

    #[test]
    fn an_empty_or_punctuation_only_query_finds_nothing() {
        let r = EmbeddedRetriever::build(&Catalog::generate(3, 20)).unwrap();
        assert!(r.search("", None, 5).unwrap().is_empty());
        assert!(r.search("?!", None, 5).unwrap().is_empty());
        assert!(r.search("shipping", None, 0).unwrap().is_empty());
    }

    #[test]
    fn chunks_carry_their_token_count() {
        let r = EmbeddedRetriever::build(&Catalog::generate(3, 20)).unwrap();
        let hits = r.search("returns refund", None, 3).unwrap();
        assert!(!hits.is_empty());
        for h in hits {
            assert_eq!(h.chunk.tokens, Some(Cl100k.count(&h.chunk.content)));
        }
    }
}
