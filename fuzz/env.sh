# Sourced before cargo fuzz here (see docs/fuzzing.md). Optional: link a
# librocksdb.a built earlier (by any postern build of the same
# librocksdb-sys version) instead of compiling RocksDB's C++ again.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/postern-target-fuzz}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
if [ -f "$CARGO_TARGET_DIR/rocksdb-prebuilt/librocksdb.a" ]; then
  export ROCKSDB_LIB_DIR=$CARGO_TARGET_DIR/rocksdb-prebuilt ROCKSDB_STATIC=1
fi
