//! pgvector's `vector` type as a Rust value, so SQL functions take and return real `vector`s that HNSW indexes
//! and the `<=>` operator accept without casts.
//!
//! pgvector's on-disk layout (src/vector.h): a 4-byte varlena header, int16 dim, int16 unused, then dim float4s.
use pgrx::callconv::{Arg, ArgAbi, BoxRet, FcInfo};
use pgrx::pg_sys;
use pgrx::datum::UnboxDatum;
use pgrx::{FromDatum, IntoDatum};

/// pgvector's limit on dimensions (VECTOR_MAX_DIM).
pub const VECTOR_MAX_DIM: usize = 16000;
const HEADER_BYTES: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct Vector(pub Vec<f32>);

pgrx::impl_sql_translatable!(Vector, "vector");

impl IntoDatum for Vector {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        assert!(self.0.len() <= VECTOR_MAX_DIM, "vector of {} dimensions exceeds pgvector's limit", self.0.len());
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

    /// pgvector's `vector` type, found through the extension rather than the search_path, which need not
    /// include the schema pgvector was installed in.
    fn type_oid() -> pg_sys::Oid {
        pgrx::Spi::get_one::<pg_sys::Oid>(
            "SELECT t.oid FROM pg_type t
             JOIN pg_depend d ON d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e'
             JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'vector'
             WHERE t.typname = 'vector'",
        )
        .ok()
        .flatten()
        .expect("pgvector's vector type exists: clip_search requires the vector extension")
    }
}

impl FromDatum for Vector {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _typoid: pg_sys::Oid) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: the caller guarantees a non-null `vector` datum; detoasting gives a plain varlena whose length
        // bounds the reads below.
        unsafe {
            let raw = pg_sys::pg_detoast_datum(datum.cast_mut_ptr());
            let ptr = raw as *const u8;
            let total = pgrx::varsize_any(raw);
            let dim = (ptr.add(4) as *const i16).read_unaligned().max(0) as usize;
            assert!(HEADER_BYTES + 4 * dim <= total, "malformed vector datum");
            let mut values = vec![0f32; dim];
            std::ptr::copy_nonoverlapping(ptr.add(HEADER_BYTES), values.as_mut_ptr() as *mut u8, 4 * dim);
            Some(Vector(values))
        }
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
