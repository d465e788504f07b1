//! Scenarios of the call-quality bench: TOML files in `benches/scenarios/`, each a name, a
//! description, and the impairments (a [`sotto_netsim::Impairment`]) of each direction of
//! the call's path: `[both]` for the same in each, or `[forward]` (caller to callee) and
//! `[backward]`. See `benches/scenarios/*.toml`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sotto_netsim::Impairment;

/// A scenario file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name (the file's stem, by convention), used in reports.
    pub name: String,
    /// What it models, for humans.
    pub description: String,
    /// The same impairments in each direction.
    #[serde(default)]
    pub both: Option<Impairment>,
    /// Caller to callee (instead of `both`).
    #[serde(default)]
    pub forward: Option<Impairment>,
    /// Callee to caller (instead of `both`).
    #[serde(default)]
    pub backward: Option<Impairment>,
}

/// A scenario that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML does not describe a scenario.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// The values do not make sense.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        let scenario: Scenario = toml::from_str(&text).map_err(|source| ScenarioError::Parse {
            path: path.to_owned(),
            source,
        })?;
        scenario.check().map_err(|message| ScenarioError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(scenario)
    }

    /// Every scenario in a directory, by name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>, ScenarioError> {
        let read = |source| ScenarioError::Read {
            path: dir.to_owned(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        paths.iter().map(|p| Scenario::load(p)).collect()
    }

    /// The impairments of (caller to callee, callee to caller).
    pub fn directions(&self) -> (Impairment, Impairment) {
        let both = self.both.clone().unwrap_or_default();
        (
            self.forward.clone().unwrap_or_else(|| both.clone()),
            self.backward.clone().unwrap_or(both),
        )
    }

    fn check(&self) -> Result<(), String> {
        if self.both.is_some() && (self.forward.is_some() || self.backward.is_some()) {
            return Err("give [both], or [forward] and [backward], not both".into());
        }
        let (forward, backward) = self.directions();
        for (direction, imp) in [("forward", &forward), ("backward", &backward)] {
            check_impairment(imp).map_err(|m| format!("{direction}: {m}"))?;
        }
        Ok(())
    }
}

fn probability(name: &str, p: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(format!("{name} = {p} is not a probability (0 to 1)"))
    }
}

/// 0 or more, and a number (NaN is not).
fn non_negative(value: f64) -> bool {
    value.is_finite() && value >= 0.0
}

fn check_impairment(imp: &Impairment) -> Result<(), String> {
    check_loss(&imp.loss)?;
    probability("duplicate", imp.duplicate)?;
    if !non_negative(imp.delay_ms) {
        return Err(format!("delay_ms = {} must be 0 or more", imp.delay_ms));
    }
    if let Some(cap) = &imp.bandwidth {
        check_bandwidth(cap)?;
    }
    for change in &imp.schedule {
        if !non_negative(change.at_ms) {
            return Err(format!("a change at {} ms", change.at_ms));
        }
        match &change.what {
            sotto_netsim::ChangeKind::Bandwidth {
                bandwidth: Some(cap),
            } => check_bandwidth(cap)?,
            sotto_netsim::ChangeKind::Loss { loss } => check_loss(loss)?,
            _ => {}
        }
    }
    Ok(())
}

fn check_bandwidth(cap: &sotto_netsim::Bandwidth) -> Result<(), String> {
    if cap.kbps > 0.0 && cap.queue_ms >= 0.0 {
        Ok(())
    } else {
        Err(format!(
            "bandwidth {} kbit/s with a {} ms queue",
            cap.kbps, cap.queue_ms
        ))
    }
}

fn check_loss(loss: &sotto_netsim::Loss) -> Result<(), String> {
    match *loss {
        sotto_netsim::Loss::None => Ok(()),
        sotto_netsim::Loss::Uniform { rate } => probability("rate", rate),
        sotto_netsim::Loss::GilbertElliott {
            p_good_to_bad,
            p_bad_to_good,
            loss_in_good,
            loss_in_bad,
        } => {
            probability("p_good_to_bad", p_good_to_bad)?;
            probability("p_bad_to_good", p_bad_to_good)?;
            probability("loss_in_good", loss_in_good)?;
            probability("loss_in_bad", loss_in_bad)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios")
    }

    #[test]
    fn every_scenario_file_loads_and_is_named_after_its_file() {
        let scenarios = Scenario::load_dir(&dir()).unwrap();
        assert!(scenarios.len() >= 12, "{}", scenarios.len());
        for scenario in &scenarios {
            assert!(
                dir().join(format!("{}.toml", scenario.name)).exists(),
                "{} is not named after its file",
                scenario.name
            );
            assert!(!scenario.description.is_empty());
        }
        let by_name = |name: &str| scenarios.iter().find(|s| s.name == name).unwrap();
        for (name, rate) in [
            ("loss-5", 0.05),
            ("loss-10", 0.1),
            ("loss-20", 0.2),
            ("loss-30", 0.3),
        ] {
            let (forward, backward) = by_name(name).directions();
            assert!((forward.loss.mean_rate() - rate).abs() < 1e-9, "{name}");
            assert_eq!(forward, backward);
        }
        let bursty = by_name("bursty").directions().0.loss;
        assert!((bursty.mean_rate() - 0.1).abs() < 1e-6);
        assert_eq!(
            by_name("clean").directions().0.loss,
            sotto_netsim::Loss::None
        );
        assert_eq!(by_name("outage").directions().0.schedule.len(), 1);
    }

    #[test]
    fn bad_scenarios_are_refused_with_the_reason() {
        let tmp = tempfile::tempdir().unwrap();
        for (text, needle) in [
            (
                "name = \"x\"\ndescription = \"y\"\n[both]\nloss = { kind = \"uniform\", rate = 1.5 }\n",
                "not a probability",
            ),
            (
                "name = \"x\"\ndescription = \"y\"\n[both]\ndelay_ms = -3\n",
                "delay_ms",
            ),
            (
                "name = \"x\"\ndescription = \"y\"\n[both]\n[forward]\n",
                "not both",
            ),
            (
                "name = \"x\"\ndescription = \"y\"\n[both]\nlos = 3\n",
                "unknown field",
            ),
            ("name = \"x\"\n", "description"),
            (
                "name = \"x\"\ndescription = \"y\"\n[[both.schedule]]\nat_ms = 1\nchange = \"outage\"\nduration_ms = 5\ntypo = 1\n",
                "unknown field",
            ),
        ] {
            let path = tmp.path().join("bad.toml");
            std::fs::write(&path, text).unwrap();
            let err = Scenario::load(&path).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
