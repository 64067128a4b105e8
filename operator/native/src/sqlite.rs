//! The few SQLite C functions the scan needs, bound at run time to the SQLite library that
//! Python's `_sqlite3` module already loaded, never to a copy of our own.
//!
//! Two SQLite libraries in one process each keep their own table of POSIX locks per file;
//! when one closes a descriptor, the kernel drops the locks the other holds on that file
//! (sqlite.org/howtocorrupt.html, "multiple copies of SQLite linked into the same
//! application"), and a writer elsewhere could then corrupt the WAL. So this crate links no
//! SQLite: `Library::bind` takes the already loaded library (`RTLD_NOLOAD`) and resolves
//! the functions through it with `dlsym`, which searches its dependencies too, so it works
//! whether `_sqlite3` links `libsqlite3.so` or embeds SQLite. No file for `_sqlite3` (built
//! into the interpreter) means the interpreter's own symbols.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;

pub const ROW: c_int = 100;
pub const DONE: c_int = 101;
pub const INTEGER: c_int = 1;
pub const TEXT: c_int = 3;
pub const NULL: c_int = 5;
const OK: c_int = 0;
const OPEN_READWRITE: c_int = 0x0000_0002;
// The connection never leaves the thread that opened it: no per-call mutex.
const OPEN_NOMUTEX: c_int = 0x0000_8000;

type Db = c_void;
type Stmt = c_void;

/// The C functions used, each with its C signature, and the symbol it is bound to.
macro_rules! api {
    ($($field:ident: fn($($arg:ty),*) -> $ret:ty = $name:literal;)*) => {
        struct Api {
            $($field: unsafe extern "C" fn($($arg),*) -> $ret,)*
        }

        impl Api {
            fn bind(symbol: impl Fn(&CStr) -> Result<*mut c_void, String>) -> Result<Api, String> {
                Ok(Api {
                    $($field: {
                        let address = symbol($name)?;
                        // SAFETY: SQLite's C function of that name has this signature.
                        unsafe {
                            std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($arg),*) -> $ret>(
                                address,
                            )
                        }
                    },)*
                })
            }
        }
    };
}

api! {
    threadsafe: fn() -> c_int = c"sqlite3_threadsafe";
    open_v2: fn(*const c_char, *mut *mut Db, c_int, *const c_char) -> c_int = c"sqlite3_open_v2";
    close_v2: fn(*mut Db) -> c_int = c"sqlite3_close_v2";
    busy_timeout: fn(*mut Db, c_int) -> c_int = c"sqlite3_busy_timeout";
    errmsg: fn(*mut Db) -> *const c_char = c"sqlite3_errmsg";
    exec: fn(*mut Db, *const c_char, *const c_void, *mut c_void, *mut *mut c_char) -> c_int
        = c"sqlite3_exec";
    prepare_v2: fn(*mut Db, *const c_char, c_int, *mut *mut Stmt, *mut *const c_char) -> c_int
        = c"sqlite3_prepare_v2";
    step: fn(*mut Stmt) -> c_int = c"sqlite3_step";
    finalize: fn(*mut Stmt) -> c_int = c"sqlite3_finalize";
    column_type: fn(*mut Stmt, c_int) -> c_int = c"sqlite3_column_type";
    column_int64: fn(*mut Stmt, c_int) -> i64 = c"sqlite3_column_int64";
    column_text: fn(*mut Stmt, c_int) -> *const u8 = c"sqlite3_column_text";
    column_bytes: fn(*mut Stmt, c_int) -> c_int = c"sqlite3_column_bytes";
}

/// A handle on the loaded SQLite library, kept open while connections use it.
pub struct Library {
    handle: *mut c_void,
    api: Api,
}

// SAFETY: the handle is only passed to dlclose, and SQLite is checked to be thread-safe.
unsafe impl Send for Library {}

impl Library {
    /// Bind to the SQLite that the already loaded object `path` uses (`None`: the program).
    /// `load`: allow loading it (only for tests that run without Python).
    pub fn bind(path: Option<&str>, load: bool) -> Result<Library, String> {
        let name = match path {
            Some(path) => Some(CString::new(path).map_err(|_| "library path has a NUL")?),
            None => None,
        };
        let mode = libc::RTLD_NOW | if load { 0 } else { libc::RTLD_NOLOAD };
        // SAFETY: a valid C string or NULL; RTLD_NOLOAD never runs new initialisers.
        let handle =
            unsafe { libc::dlopen(name.as_ref().map_or(ptr::null(), |n| n.as_ptr()), mode) };
        if handle.is_null() {
            return Err(format!("{path:?} is not loaded: {}", dlerror()));
        }
        let symbol = |name: &CStr| -> Result<*mut c_void, String> {
            // SAFETY: a live handle and a C string.
            let address = unsafe { libc::dlsym(handle, name.as_ptr()) };
            if address.is_null() {
                Err(format!("no {name:?} in {path:?}"))
            } else {
                Ok(address)
            }
        };
        let bound = Api::bind(symbol).and_then(|api| {
            // SAFETY: a plain call.
            if unsafe { (api.threadsafe)() } == 0 {
                return Err(String::from("SQLite was built without thread support"));
            }
            Ok(api)
        });
        match bound {
            Ok(api) => Ok(Library { handle, api }),
            Err(error) => {
                // SAFETY: the handle came from dlopen above.
                unsafe { libc::dlclose(handle) };
                Err(error)
            }
        }
    }

    /// Open an existing database file read-write (SQLite drops to read-only by itself when
    /// the file is write-protected), waiting up to 60 s for locks, as the backend does.
    pub fn open(&self, path: &str) -> Result<Connection<'_>, String> {
        let name = CString::new(path).map_err(|_| "database path has a NUL")?;
        let mut db: *mut Db = ptr::null_mut();
        // SAFETY: valid pointers; on failure SQLite may still hand back a handle to close.
        let code = unsafe {
            (self.api.open_v2)(
                name.as_ptr(),
                &mut db,
                OPEN_READWRITE | OPEN_NOMUTEX,
                ptr::null(),
            )
        };
        let connection = Connection { api: &self.api, db };
        if code != OK {
            return Err(format!("cannot open {path}: {}", connection.error()));
        }
        // SAFETY: an open connection.
        unsafe { (self.api.busy_timeout)(db, 60_000) };
        Ok(connection)
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        // SAFETY: the handle came from dlopen; connections borrow self, so none is left.
        unsafe { libc::dlclose(self.handle) };
    }
}

fn dlerror() -> String {
    // SAFETY: dlerror returns NULL or a C string valid until the next dl call.
    let message = unsafe { libc::dlerror() };
    if message.is_null() {
        String::from("unknown error")
    } else {
        // SAFETY: checked non-NULL above.
        unsafe { CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned()
    }
}

pub struct Connection<'a> {
    api: &'a Api,
    db: *mut Db,
}

impl<'a> Connection<'a> {
    fn error(&self) -> String {
        if self.db.is_null() {
            return String::from("out of memory");
        }
        // SAFETY: a connection handle; errmsg returns a C string owned by SQLite.
        unsafe { CStr::from_ptr((self.api.errmsg)(self.db)) }
            .to_string_lossy()
            .into_owned()
    }

    pub fn execute(&self, sql: &CStr) -> Result<(), String> {
        // SAFETY: an open connection and a C string; no callback, no error string.
        let code = unsafe {
            (self.api.exec)(
                self.db,
                sql.as_ptr(),
                ptr::null(),
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        if code != OK {
            return Err(format!("{sql:?} failed: {}", self.error()));
        }
        Ok(())
    }

    pub fn prepare(&self, sql: &CStr) -> Result<Statement<'_>, String> {
        let mut stmt: *mut Stmt = ptr::null_mut();
        // SAFETY: an open connection, a NUL-terminated statement (-1: read to the NUL).
        let code =
            unsafe { (self.api.prepare_v2)(self.db, sql.as_ptr(), -1, &mut stmt, ptr::null_mut()) };
        if code != OK || stmt.is_null() {
            return Err(format!("cannot prepare {sql:?}: {}", self.error()));
        }
        Ok(Statement {
            connection: self,
            stmt,
        })
    }
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        if !self.db.is_null() {
            // SAFETY: statements borrow the connection, so all are finalized by now;
            // closing also ends any open transaction (a read-only one here).
            unsafe { (self.api.close_v2)(self.db) };
        }
    }
}

pub struct Statement<'c> {
    connection: &'c Connection<'c>,
    stmt: *mut Stmt,
}

impl Statement<'_> {
    /// `ROW` or `DONE`; an error otherwise.
    pub fn step(&mut self) -> Result<c_int, String> {
        // SAFETY: a prepared statement.
        match unsafe { (self.connection.api.step)(self.stmt) } {
            code @ (ROW | DONE) => Ok(code),
            _ => Err(format!("reading failed: {}", self.connection.error())),
        }
    }

    pub fn kind(&self, column: c_int) -> c_int {
        // SAFETY: a statement on a row; SQLite checks the column index.
        unsafe { (self.connection.api.column_type)(self.stmt, column) }
    }

    /// The column as an integer; an error if it is stored as anything else.
    pub fn integer(&self, column: c_int) -> Result<i64, String> {
        if self.kind(column) != INTEGER {
            return Err(format!("column {column} is not an integer"));
        }
        // SAFETY: as above.
        Ok(unsafe { (self.connection.api.column_int64)(self.stmt, column) })
    }

    /// The column's UTF-8 text, valid until the next `step`; an error if it is stored as
    /// anything but text, or is not UTF-8 (Python's sqlite3 would fail to decode it).
    pub fn text(&self, column: c_int) -> Result<&str, String> {
        std::str::from_utf8(self.text_bytes(column)?)
            .map_err(|_| format!("column {column} is not UTF-8"))
    }

    /// The column's text bytes, not checked for UTF-8, valid until the next `step`; an
    /// error if it is stored as anything but text.
    pub fn text_bytes(&self, column: c_int) -> Result<&[u8], String> {
        if self.kind(column) != TEXT {
            return Err(format!("column {column} is not text"));
        }
        let api = self.connection.api;
        // SAFETY: text first, then its length (SQLite's documented order); the bytes stay
        // valid until the statement steps again, which needs `&mut self`.
        unsafe {
            let data = (api.column_text)(self.stmt, column);
            let length = (api.column_bytes)(self.stmt, column);
            if data.is_null() {
                return Err(format!("column {column}: out of memory"));
            }
            Ok(std::slice::from_raw_parts(data, length as usize))
        }
    }
}

impl Drop for Statement<'_> {
    fn drop(&mut self) {
        // SAFETY: a prepared statement, finalized once.
        unsafe { (self.connection.api.finalize)(self.stmt) };
    }
}
