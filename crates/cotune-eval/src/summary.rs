//! Scores of single answers and their means: per file, per domain, and the macro-average
//! over domains that Co-PLMs reports.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::{exact_match, exact_match_raw, rouge_l, EvalError, RougeScore};

/// Every metric of one prediction against one reference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairScore {
    /// SQuAD exact match after [`normalize_answer`](crate::normalize_answer).
    pub exact_match: bool,
    /// Exact match after trimming surrounding whitespace only ([`exact_match_raw`]).
    pub exact_match_raw: bool,
    /// Rouge-L of the prediction against the reference.
    pub rouge_l: RougeScore,
}

impl PairScore {
    /// Scores `prediction` against `reference` with every metric.
    pub fn new(prediction: &str, reference: &str) -> Self {
        Self {
            exact_match: exact_match(prediction, reference),
            exact_match_raw: exact_match_raw(prediction, reference),
            rouge_l: rouge_l(prediction, reference),
        }
    }
}

/// Means of the metrics over a set of answers. Exact matches are fractions in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreSummary {
    /// How many answers the means cover (for a macro-average: over all domains).
    pub count: usize,
    /// Mean normalised exact match.
    pub exact_match: f64,
    /// Mean raw exact match.
    pub exact_match_raw: f64,
    /// Mean Rouge-L F-measure.
    pub rouge_l_f1: f64,
}

impl ScoreSummary {
    /// Means over `scores`; `None` when there are none, since an empty mean has no value.
    pub fn mean(scores: &[PairScore]) -> Option<Self> {
        let mut totals = ScoreTotals::default();
        scores.iter().for_each(|score| totals.add(score));
        totals.mean()
    }
}

/// Running sums behind a [`ScoreSummary`], so a file can be averaged without keeping
/// every line's score.
#[derive(Debug, Default)]
pub(crate) struct ScoreTotals {
    count: usize,
    exact_match: f64,
    exact_match_raw: f64,
    rouge_l_f1: f64,
}

impl ScoreTotals {
    /// Adds one answer's scores.
    pub(crate) fn add(&mut self, score: &PairScore) {
        self.count += 1;
        self.exact_match += f64::from(u8::from(score.exact_match));
        self.exact_match_raw += f64::from(u8::from(score.exact_match_raw));
        self.rouge_l_f1 += score.rouge_l.fmeasure;
    }

    /// The means so far, or `None` before the first answer.
    pub(crate) fn mean(&self) -> Option<ScoreSummary> {
        (self.count > 0).then(|| {
            let n = self.count as f64;
            ScoreSummary {
                count: self.count,
                exact_match: self.exact_match / n,
                exact_match_raw: self.exact_match_raw / n,
                rouge_l_f1: self.rouge_l_f1 / n,
            }
        })
    }
}

/// The means of one domain (one data set or task) of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainSummary {
    /// The domain's name.
    pub domain: String,
    /// Means over the domain's answers.
    pub summary: ScoreSummary,
}

/// Per-domain means and their unweighted (macro) average.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainReport {
    /// One entry per domain, in the order given.
    pub per_domain: Vec<DomainSummary>,
    /// Each metric averaged over domains with equal weight, whatever their sizes;
    /// `count` is the total number of answers.
    pub macro_average: ScoreSummary,
}

/// Means per domain and their macro-average: every domain weighs the same, however many
/// answers it has.
///
/// Fails when `domains` is empty, when a domain has no scores, or when a domain name
/// appears twice (its answers would be counted as two domains).
pub fn macro_average<D, S>(domains: &[(D, S)]) -> Result<DomainReport, EvalError>
where
    D: AsRef<str>,
    S: AsRef<[PairScore]>,
{
    if domains.is_empty() {
        return Err(EvalError::NoDomains);
    }
    let mut seen = HashSet::new();
    let mut per_domain = Vec::with_capacity(domains.len());
    for (domain, scores) in domains {
        let domain = domain.as_ref();
        if !seen.insert(domain) {
            return Err(EvalError::DuplicateDomain {
                domain: domain.to_owned(),
            });
        }
        let summary =
            ScoreSummary::mean(scores.as_ref()).ok_or_else(|| EvalError::EmptyDomain {
                domain: domain.to_owned(),
            })?;
        per_domain.push(DomainSummary {
            domain: domain.to_owned(),
            summary,
        });
    }
    let n = per_domain.len() as f64;
    let mean_of = |metric: fn(&ScoreSummary) -> f64| {
        per_domain.iter().map(|d| metric(&d.summary)).sum::<f64>() / n
    };
    let macro_average = ScoreSummary {
        count: per_domain.iter().map(|d| d.summary.count).sum(),
        exact_match: mean_of(|s| s.exact_match),
        exact_match_raw: mean_of(|s| s.exact_match_raw),
        rouge_l_f1: mean_of(|s| s.rouge_l_f1),
    };
    Ok(DomainReport {
        per_domain,
        macro_average,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(pairs: &[(&str, &str)]) -> Vec<PairScore> {
        pairs.iter().map(|(p, r)| PairScore::new(p, r)).collect()
    }

    #[test]
    fn mean_of_no_scores_is_none() {
        assert_eq!(ScoreSummary::mean(&[]), None);
    }

    #[test]
    fn mean_counts_true_as_one() {
        let summary = ScoreSummary::mean(&scores(&[("Paris", "paris"), ("Rome", "Paris")]))
            .expect("two scores");
        assert_eq!(summary.count, 2);
        assert_eq!(summary.exact_match, 0.5);
        assert_eq!(summary.exact_match_raw, 0.0);
        assert_eq!(summary.rouge_l_f1, 0.5);
    }

    #[test]
    fn macro_average_weighs_domains_equally() {
        let small = scores(&[("yes", "yes")]);
        let large = scores(&[("a", "b"), ("c", "d"), ("e", "f")]);
        let report = macro_average(&[("small", &small[..]), ("large", &large[..])])
            .expect("two non-empty domains");
        assert_eq!(report.per_domain.len(), 2);
        assert_eq!(report.per_domain[0].domain, "small");
        assert_eq!(report.per_domain[1].summary.exact_match, 0.0);
        assert_eq!(report.macro_average.exact_match, 0.5);
        assert_eq!(report.macro_average.exact_match_raw, 0.5);
        assert_eq!(report.macro_average.rouge_l_f1, 0.5);
        assert_eq!(report.macro_average.count, 4);
    }

    #[test]
    fn macro_average_accepts_owned_names_and_vectors() {
        let domains = vec![("medqa".to_string(), scores(&[("x", "x")]))];
        let report = macro_average(&domains).expect("one domain");
        assert_eq!(report.macro_average.exact_match, 1.0);
    }

    #[test]
    fn macro_average_rejects_bad_domain_lists() {
        let none: [(&str, Vec<PairScore>); 0] = [];
        assert!(matches!(macro_average(&none), Err(EvalError::NoDomains)));

        let empty = macro_average(&[("medqa", Vec::new())]).unwrap_err();
        assert!(matches!(&empty, EvalError::EmptyDomain { domain } if domain == "medqa"));
        assert!(empty.to_string().contains("medqa"), "{empty}");

        let one = scores(&[("x", "x")]);
        let twice = macro_average(&[("news", &one[..]), ("news", &one[..])]).unwrap_err();
        assert!(matches!(&twice, EvalError::DuplicateDomain { domain } if domain == "news"));
        assert!(twice.to_string().contains("news"), "{twice}");
    }
}
