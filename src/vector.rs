//! pgvector's `vector` type as a Rust value, so SQL functions take and return real `vector`s that HNSW indexes
//! and the `<=>` operator accept without casts.
//!
//! pgvector's on-disk layout (src/vector.h): a 4-byte varlena header, int16 dim, int16 unused, then dim float4s.
use std::cell::Cell;
use std::sync::Once;

use pgrx::callconv::{Arg, ArgAbi, BoxRet, FcInfo};
use pgrx::datum::UnboxDatum;
use pgrx::pg_sys;
use pgrx::{FromDatum, IntoDatum, PgSqlErrorCode};

use crate::errors::{error, error_with_hint};

/// pgvector's limit on dimensions (VECTOR_MAX_DIM).
pub const VECTOR_MAX_DIM: usize = 16000;
const HEADER_BYTES: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct Vector(pub Vec<f32>);

pgrx::impl_sql_translatable!(Vector, "vector");

impl IntoDatum for Vector {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        assert!(self.0.len() <= VECTOR_MAX_DIM, "vector of {} dimensions exceeds pgvector's limit", self.0.len());
        // pgvector refuses NaN and infinities in every vector it makes; a model's broken output must not slip in.
        if let Some(bad) = self.0.iter().find(|x| !x.is_finite()) {
            error(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, format!("{bad} not allowed in vector"));
        }
        let size = HEADER_BYTES + 4 * self.0.len();
        // SAFETY: palloc0 returns `size` zeroed bytes in the current memory context; every write stays inside them.
        unsafe {
            let ptr = pg_sys::palloc0(size) as *mut u8;
            pgrx::set_varsize_4b(ptr as *mut pg_sys::varlena, size as i32);
            (ptr.add(4) as *mut i16).write(self.0.len() as i16);
            std::ptr::copy_nonoverlapping(self.0.as_ptr(), ptr.add(HEADER_BYTES) as *mut f32, self.0.len());
            Some(pg_sys::Datum::from(ptr))
        }
    }

    fn type_oid() -> pg_sys::Oid {
        vector_type_oid()
    }
}

impl FromDatum for Vector {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _typoid: pg_sys::Oid) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: the caller guarantees a non-null `vector` datum. pg_detoast_datum returns a plain varlena with a
        // 4-byte header (the datum itself, or a palloc'd copy that is freed below); the length checks bound every
        // read.
        unsafe {
            let original = datum.cast_mut_ptr::<pg_sys::varlena>();
            let raw = pg_sys::pg_detoast_datum(original);
            let total = pgrx::varsize(raw);
            let ptr = raw as *const u8;
            let dim = if total >= HEADER_BYTES { (ptr.add(4) as *const i16).read_unaligned() } else { -1 };
            let valid = dim >= 0 && dim as usize <= VECTOR_MAX_DIM && total == HEADER_BYTES + 4 * dim as usize;
            let values = valid.then(|| {
                let mut values = vec![0f32; dim as usize];
                std::ptr::copy_nonoverlapping(ptr.add(HEADER_BYTES), values.as_mut_ptr() as *mut u8, values.len() * 4);
                values
            });
            if raw != original {
                pg_sys::pfree(raw.cast());
            }
            let Some(values) = values else {
                error(PgSqlErrorCode::ERRCODE_DATA_CORRUPTED, format!("malformed vector value: {total} bytes, dimension {dim}"));
            };
            Some(Vector(values))
        }
    }
}

// The generated signatures name pgvector's type as plain `vector`, which CREATE EXTENSION resolves through the search
// path it sets (this extension's schema, then pgvector's). A role that may create objects in this extension's schema
// could make that name a type of its own when pgvector lives in another schema: the install refuses then. Runs
// first, under that search_path, so every name in it is qualified.
pgrx::extension_sql!(
    r#"
DO $check$
DECLARE
    named     pg_catalog.oid := pg_catalog.to_regtype('vector'::pg_catalog.text)::pg_catalog.oid;
    pgvectors pg_catalog.oid := (
        SELECT t.oid FROM pg_catalog.pg_type t
        JOIN pg_catalog.pg_depend d ON d.objid OPERATOR(pg_catalog.=) t.oid
            AND d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_type'::pg_catalog.regclass
            AND d.deptype OPERATOR(pg_catalog.=) 'e'::"char"
        JOIN pg_catalog.pg_extension e ON e.oid OPERATOR(pg_catalog.=) d.refobjid
        WHERE e.extname OPERATOR(pg_catalog.=) 'vector'::pg_catalog.name
          AND t.typname OPERATOR(pg_catalog.=) 'vector'::pg_catalog.name);
BEGIN
    IF named IS NULL OR pgvectors IS NULL OR named OPERATOR(pg_catalog.<>) pgvectors THEN
        RAISE EXCEPTION 'clip_search: the type name "vector" is not pgvector''s type here'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Install clip_search in the schema of the extension vector, or drop the other type named vector.';
    END IF;
END
$check$;
"#,
    name = "pgvector_type_check",
    bootstrap
);

/// pgvector's `vector` type, found through its extension rather than the search_path (which need not include the
/// schema pgvector was installed in). Looked up once per backend; any change to pg_type forgets it, so a
/// re-created pgvector is found again.
fn vector_type_oid() -> pg_sys::Oid {
    thread_local! {
        static CACHED: Cell<Option<pg_sys::Oid>> = const { Cell::new(None) };
    }
    unsafe extern "C-unwind" fn forget(_arg: pg_sys::Datum, _cache_id: i32, _hash_value: u32) {
        CACHED.set(None);
    }
    static REGISTER_INVALIDATION: Once = Once::new();
    if let Some(oid) = CACHED.get() {
        return oid;
    }
    REGISTER_INVALIDATION.call_once(|| {
        // SAFETY: registers a callback that only clears a cell; PostgreSQL keeps it for the backend's lifetime.
        unsafe {
            pg_sys::CacheRegisterSyscacheCallback(pg_sys::SysCacheIdentifier::TYPEOID as i32, Some(forget), pg_sys::Datum::from(0))
        }
    });
    // Catalog lookups, not SPI: the SPI query this replaced failed in parallel workers ("cannot assign XIDs during
    // a parallel operation") and cost a query per call; these functions are PARALLEL SAFE.
    // SAFETY: plain catalog reads inside a transaction; the C strings are static.
    let oid = unsafe {
        let extension = pg_sys::get_extension_oid(c"vector".as_ptr(), true);
        extension_schema(extension).map_or(pg_sys::InvalidOid, |schema| {
            pg_sys::GetSysCacheOid(
                pg_sys::SysCacheIdentifier::TYPENAMENSP as i32,
                pg_sys::Anum_pg_type_oid as pg_sys::AttrNumber,
                pg_sys::Datum::from(c"vector".as_ptr()),
                pg_sys::Datum::from(schema),
                pg_sys::Datum::from(0),
                pg_sys::Datum::from(0),
            )
        })
    };
    if oid == pg_sys::InvalidOid {
        error_with_hint(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            "pgvector's type vector is not installed in this database",
            "clip_search needs the vector extension: CREATE EXTENSION vector;",
        );
    }
    CACHED.set(Some(oid));
    oid
}

/// The schema an extension was created in (PostgreSQL 16 exports `get_extension_schema`; 15 keeps it private).
///
/// # Safety
/// Must run inside a transaction.
unsafe fn extension_schema(extension: pg_sys::Oid) -> Option<pg_sys::Oid> {
    if extension == pg_sys::InvalidOid {
        return None;
    }
    unsafe {
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        let relation = pg_sys::table_open(pg_sys::ExtensionRelationId, lock);
        let mut key: pg_sys::ScanKeyData = std::mem::zeroed();
        pg_sys::ScanKeyInit(
            &mut key,
            pg_sys::Anum_pg_extension_oid as pg_sys::AttrNumber,
            pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
            pg_sys::RegProcedure::from(pg_sys::F_OIDEQ),
            pg_sys::Datum::from(extension),
        );
        let scan = pg_sys::systable_beginscan(
            relation,
            pg_sys::Oid::from(pg_sys::ExtensionOidIndexId),
            true,
            std::ptr::null_mut(),
            1,
            &mut key,
        );
        let tuple = pg_sys::systable_getnext(scan);
        let schema = (!tuple.is_null())
            .then(|| (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_extension>(tuple)).extnamespace);
        pg_sys::systable_endscan(scan);
        pg_sys::table_close(relation, lock);
        schema
    }
}

unsafe impl BoxRet for Vector {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        match self.into_datum() {
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}

// SAFETY: the datum is a non-null `vector`; `from_datum` copies it out, so `As` borrows nothing.
unsafe impl UnboxDatum for Vector {
    type As<'src> = Vector;
    unsafe fn unbox<'src>(datum: pgrx::datum::Datum<'src>) -> Self::As<'src>
    where
        Self: 'src,
    {
        unsafe { Vector::from_datum(datum.sans_lifetime(), false).expect("non-null vector") }
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for Vector {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum().unwrap_or_else(|| panic!("argument {index} must not be NULL")) }
    }
}
