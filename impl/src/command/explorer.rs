//! What stateright's Explorer shows for `cachelock explore`: the model, with its actions
//! named as the stories name them (`run#1: lock-env`), each step told as a story line with
//! every process's place in its program, and an SVG that names the policy and the
//! scenario and tells the path so far. Only the presentation differs from the model the
//! checker explores: transitions and properties are the model's own.

use std::fmt::Write;

use cachelock_model::machine::{Action, CacheModel, State};
use cachelock_model::{Policy, Scenario, story};
use stateright::{Model, Path, Property};

/// The model as the Explorer presents it.
pub struct Explained {
    model: CacheModel,
    properties: Vec<Property<CacheModel>>,
}

/// The most properties a model may have here (one condition function each, below).
const MAX_PROPERTIES: usize = 16;

fn holds<const I: usize>(m: &Explained, s: &State) -> bool {
    m.properties
        .get(I)
        .is_some_and(|p| (p.condition)(&m.model, s))
}

const CONDITIONS: [fn(&Explained, &State) -> bool; MAX_PROPERTIES] = [
    holds::<0>,
    holds::<1>,
    holds::<2>,
    holds::<3>,
    holds::<4>,
    holds::<5>,
    holds::<6>,
    holds::<7>,
    holds::<8>,
    holds::<9>,
    holds::<10>,
    holds::<11>,
    holds::<12>,
    holds::<13>,
    holds::<14>,
    holds::<15>,
];

impl Explained {
    /// The model of `policy` on `scenario`, presented for people.
    pub fn new(policy: Policy, scenario: &Scenario) -> Result<Explained, String> {
        let model = CacheModel::new(policy, scenario);
        let properties = model.properties();
        if properties.len() > MAX_PROPERTIES {
            return Err(format!(
                "the model has {} properties; the Explorer shows at most {MAX_PROPERTIES}",
                properties.len()
            ));
        }
        Ok(Explained { model, properties })
    }

    /// "run#1: lock-env".
    fn action_name(&self, action: &Action) -> String {
        let (p, what) = match *action {
            Action::Step(p, step) => (p, step.name()),
            Action::Event(p, e) => (p, e.name()),
        };
        format!("{}: {what}", self.model.procs[p].label)
    }

    /// One line per process: where it is in its program.
    fn places(&self, s: &State) -> Vec<String> {
        (0..self.model.procs.len())
            .map(|p| {
                let label = &self.model.procs[p].label;
                let place = if !self.model.alive(s, p) {
                    "killed".to_string()
                } else if self.model.finished(s, p) {
                    "finished".to_string()
                } else if let Some(step) = self.model.next_step(s, p) {
                    let enabled = if self.model.step_enabled(s, p) {
                        ""
                    } else {
                        " (waiting)"
                    };
                    format!("next: {}{enabled}", step.name())
                } else {
                    "done".to_string()
                };
                format!("{label}: {place}")
            })
            .collect()
    }

    fn title(&self) -> String {
        format!(
            "policy {} · scenario {}",
            self.model.policy, self.model.scenario
        )
    }
}

impl Model for Explained {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        self.model.init_states()
    }

    fn actions(&self, s: &State, out: &mut Vec<Action>) {
        self.model.actions(s, out);
    }

    fn next_state(&self, s: &State, action: Action) -> Option<State> {
        self.model.next_state(s, action)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        self.properties
            .iter()
            .enumerate()
            .map(|(i, p)| Property {
                expectation: p.expectation.clone(),
                name: p.name,
                condition: CONDITIONS[i],
            })
            .collect()
    }

    fn format_action(&self, action: &Action) -> String {
        self.action_name(action)
    }

    fn format_step(&self, before: &State, action: Action) -> Option<String> {
        let after = self.model.next_state(before, action)?;
        let mut text = format!(
            "{}\n{}\n\n",
            self.title(),
            story::line(&self.model, before, action, &after)
        );
        for line in self.places(&after) {
            let _ = writeln!(text, "  {line}");
        }
        let _ = write!(text, "\nstate: {after:?}");
        Some(text)
    }

    fn as_svg(&self, path: Path<State, Action>) -> Option<String> {
        let steps = path.into_vec();
        let mut lines = vec![self.title(), String::new()];
        for (i, pair) in steps.windows(2).enumerate() {
            if let Some(action) = pair[0].1 {
                lines.push(format!(
                    "{}. {}",
                    i + 1,
                    story::line(&self.model, &pair[0].0, action, &pair[1].0)
                ));
            }
        }
        if let Some((last, _)) = steps.last() {
            lines.push(String::new());
            lines.extend(self.places(last));
        }
        let height = 20 * lines.len() + 10;
        let mut svg = format!(
            "<svg xmlns='http://www.w3.org/2000/svg' width='900' height='{height}' \
             font-family='monospace' font-size='13'>"
        );
        for (i, line) in lines.iter().enumerate() {
            let weight = if i == 0 { " font-weight='bold'" } else { "" };
            let _ = write!(
                svg,
                "<text x='5' y='{}'{weight}>{}</text>",
                20 * (i + 1),
                escape(line)
            );
        }
        svg.push_str("</svg>");
        Some(svg)
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_explorer_names_actions_as_stories_do_and_keeps_the_models_verdicts() {
        let sc = Scenario::parse("run,clean").expect("a scenario");
        let m = Explained::new(Policy::Cachelock, &sc).expect("the model");
        let init = m.init_states().remove(0);
        let mut actions = Vec::new();
        m.actions(&init, &mut actions);
        let names: Vec<String> = actions.iter().map(|a| m.format_action(a)).collect();
        assert!(names.iter().any(|n| n.starts_with("run#1: ")), "{names:?}");
        assert!(names.iter().all(|n| !n.contains("Step(")), "{names:?}");
        let step = m
            .format_step(&init, actions[0])
            .expect("the step changes the state");
        assert!(
            step.starts_with("policy cachelock · scenario run,clean\n"),
            "{step}"
        );
        assert!(step.contains(&names[0]), "{step}");
        let svg = m
            .as_svg(Path::from_actions(&m, init.clone(), actions.iter().take(1)).expect("path"))
            .expect("svg");
        assert!(
            svg.contains("policy cachelock · scenario run,clean") && svg.contains("1. run#1: "),
            "{svg}"
        );
        // The same properties, each deciding as the model's does.
        let theirs = m.model.properties();
        let ours = m.properties();
        assert_eq!(ours.len(), theirs.len());
        let next = m.next_state(&init, actions[0]).expect("a state");
        for (o, t) in ours.iter().zip(&theirs) {
            assert_eq!(o.name, t.name);
            for s in [&init, &next] {
                assert_eq!(
                    (o.condition)(&m, s),
                    (t.condition)(&m.model, s),
                    "{}",
                    o.name
                );
            }
        }
    }
}
