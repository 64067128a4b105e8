//! `continue_orchestrator.ledger._native`: the fast path of SQLite ledger verification.
//!
//! Python verifies about 100,000 entries per second, most of it fetching rows through
//! `sqlite3` and hashing them in the interpreter. This module does that per-entry pass in
//! one read transaction without the interpreter (and without the GIL), and answers either
//! "clean, and here is what the report needs" or "not clean"; on the latter, Python runs
//! its own `check`, the one source of every diagnosis. See docs/ledger.md.

pub mod scan;
pub mod sqlite;

#[cfg(feature = "python")]
mod python {
    use std::collections::HashMap;

    use pyo3::prelude::*;

    use crate::{scan, sqlite};

    /// Scan the SQLite ledger at `path` with the SQLite library that the loaded object
    /// `sqlite_library` uses (`_sqlite3.__file__`; None when built into the interpreter).
    /// Returns `(origin, checkpoint_rows, size, root_hash, roots_by_size, missing,
    /// tombstones)` for a clean ledger, or a string saying why the fast path gave up.
    #[pyfunction]
    #[pyo3(signature = (sqlite_library, path, kinds, tombstone, extra_sizes))]
    fn scan_sqlite(
        py: Python<'_>,
        sqlite_library: Option<String>,
        path: String,
        kinds: Vec<String>,
        tombstone: String,
        extra_sizes: Vec<i64>,
    ) -> PyResult<Py<PyAny>> {
        let outcome = py.detach(|| {
            let library = sqlite::Library::bind(sqlite_library.as_deref(), false)?;
            scan::scan(&library, &path, &kinds, &tombstone, &extra_sizes)
        });
        Ok(match outcome {
            Ok(clean) => {
                let roots: HashMap<i64, String> = clean.roots.into_iter().collect();
                (
                    clean.origin,
                    clean.checkpoints,
                    clean.size,
                    clean.root_hash,
                    roots,
                    clean.missing,
                    clean.tombstones,
                )
                    .into_pyobject(py)?
                    .into_any()
                    .unbind()
            }
            Err(why) => why.into_pyobject(py)?.into_any().unbind(),
        })
    }

    #[pymodule]
    fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
        module.add_function(wrap_pyfunction!(scan_sqlite, module)?)
    }
}
