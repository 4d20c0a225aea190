//! Redaction of secrets in argv before an event reaches the WAL (and therefore the wire).
//!
//! Owns the flag list and the two forms it recognises: a flag followed by its value as the
//! next argument (`--password hunter2`), and a flag joined to its value (`--password=hunter2`,
//! which upstream procmond misses). Pure: no I/O, never fails, never drops an argument
//! (argument count and positions are kept, only values are replaced).

/// What replaces a secret value.
pub const REDACTED: &str = "[REDACTED]";

/// The flags whose value is a secret, matched case-insensitively (upstream procmond's list).
pub const DEFAULT_SENSITIVE_FLAGS: &[&str] = &[
    "--password",
    "--secret",
    "--token",
    "--api-key",
    "--api_key",
    "-p",
    "-s",
    "-t",
    "-k",
];

/// Redaction settings: on by default with [`DEFAULT_SENSITIVE_FLAGS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redaction {
    /// Whether argv is redacted at all.
    pub enabled: bool,
    /// Flags whose value is replaced by [`REDACTED`] (case-insensitive).
    pub sensitive_flags: Vec<String>,
}

impl Default for Redaction {
    fn default() -> Self {
        Redaction {
            enabled: true,
            sensitive_flags: DEFAULT_SENSITIVE_FLAGS
                .iter()
                .map(|flag| (*flag).to_owned())
                .collect(),
        }
    }
}

impl Redaction {
    /// No redaction (argv is stored and sent as collected).
    pub fn disabled() -> Self {
        Redaction {
            enabled: false,
            sensitive_flags: Vec::new(),
        }
    }

    fn is_sensitive(&self, flag: &str) -> bool {
        self.sensitive_flags
            .iter()
            .any(|sensitive| sensitive.eq_ignore_ascii_case(flag))
    }

    /// Replaces secret values in `argv` in place; returns how many values were replaced.
    ///
    /// `--flag value` replaces the next argument (even if it looks like a flag: a password
    /// may start with `-`); `--flag=value` keeps `--flag=` and replaces the rest. The first
    /// argument (the program) is never treated as a flag.
    pub fn redact_argv(&self, argv: &mut [String]) -> usize {
        if !self.enabled {
            return 0;
        }
        let mut replaced = 0;
        let mut value_next = false;
        for (index, arg) in argv.iter_mut().enumerate() {
            if value_next {
                value_next = false;
                if arg != REDACTED {
                    *arg = REDACTED.to_owned();
                    replaced += 1;
                }
                continue;
            }
            if index == 0 {
                continue;
            }
            if self.is_sensitive(arg) {
                value_next = true;
            } else if let Some((flag, value)) = arg.split_once('=')
                && self.is_sensitive(flag)
                && value != REDACTED
            {
                *arg = format!("{flag}={REDACTED}");
                replaced += 1;
            }
        }
        replaced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    #[test]
    fn separate_values_are_replaced_case_insensitively() {
        let mut args = argv(&["app", "--PassWord", "hunter2", "--verbose", "-k", "abc"]);
        assert_eq!(Redaction::default().redact_argv(&mut args), 2);
        assert_eq!(
            args,
            argv(&["app", "--PassWord", REDACTED, "--verbose", "-k", REDACTED])
        );
    }

    #[test]
    fn joined_values_are_replaced_too() {
        let mut args = argv(&["app", "--token=abc=def", "--API_KEY=x", "--name=bob", "-p="]);
        assert_eq!(Redaction::default().redact_argv(&mut args), 3);
        assert_eq!(
            args,
            argv(&[
                "app",
                "--token=[REDACTED]",
                "--API_KEY=[REDACTED]",
                "--name=bob",
                "-p=[REDACTED]"
            ])
        );
    }

    #[test]
    fn a_value_that_looks_like_a_flag_is_still_a_value_and_positions_are_kept() {
        let mut args = argv(&["app", "--secret", "--token", "tail"]);
        Redaction::default().redact_argv(&mut args);
        assert_eq!(args, argv(&["app", "--secret", REDACTED, "tail"]));
        let mut trailing = argv(&["app", "--password"]);
        assert_eq!(Redaction::default().redact_argv(&mut trailing), 0);
        assert_eq!(trailing, argv(&["app", "--password"]));
    }

    #[test]
    fn the_program_name_is_not_a_flag_and_disabled_does_nothing() {
        let mut args = argv(&["-p", "visible"]);
        assert_eq!(Redaction::default().redact_argv(&mut args), 0);
        let mut args = argv(&["app", "--password", "x"]);
        assert_eq!(Redaction::disabled().redact_argv(&mut args), 0);
        assert_eq!(args[2], "x");
    }

    #[test]
    fn redaction_is_idempotent() {
        let mut args = argv(&["app", "--password", "x", "--token=y"]);
        let redaction = Redaction::default();
        redaction.redact_argv(&mut args);
        let once = args.clone();
        assert_eq!(redaction.redact_argv(&mut args), 0);
        assert_eq!(args, once);
    }
}
