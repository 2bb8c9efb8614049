# The postern package.
#
# RocksDB is built from the source vendored in `librocksdb-sys` (see
# nix/README.md, "RocksDB: vendored"): the crate's bindings are generated
# at build time (`bindgen-runtime`) against exactly the RocksDB release the
# crate was released with, so nothing here depends on which RocksDB a given
# nixpkgs happens to ship.
{
  lib,
  stdenv,
  rustPlatform,
  installShellFiles,
}:

let
  cargoToml = lib.importTOML ../Cargo.toml;
  fs = lib.fileset;
in
rustPlatform.buildRustPackage {
  pname = "postern";
  inherit (cargoToml.package) version;

  # Only what cargo needs: editing nix/ or the docs does not rebuild.
  src = fs.toSource {
    root = ../.;
    fileset = fs.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../src
      (fs.maybeMissing ../build.rs)
      (fs.maybeMissing ../tests)
      (fs.maybeMissing ../benches)
      (fs.maybeMissing ../bench)
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  # bindgenHook puts libclang where clang-sys looks for it at run time
  # (`bindgen-runtime` loads it with dlopen: LIBCLANG_PATH) and passes the
  # C/C++ include paths of the Nix toolchain (BINDGEN_EXTRA_CLANG_ARGS).
  # The C++ compiler for RocksDB and the C compiler for lz4 come with stdenv.
  nativeBuildInputs = [
    rustPlatform.bindgenHook
    installShellFiles
  ];

  # The man page and shell completions come from the binary's own clap
  # definitions (`postern generate`), so they cannot drift from the CLI;
  # a cross build cannot run the binary and goes without them.
  postInstall = lib.optionalString (stdenv.buildPlatform.canExecute stdenv.hostPlatform) ''
    mkdir -p generated
    $out/bin/postern generate man generated
    for shell in bash zsh fish; do $out/bin/postern generate $shell generated; done
    installManPage generated/*.1
    installShellCompletion --cmd postern \
      --bash generated/postern.bash --zsh generated/_postern --fish generated/postern.fish
  '';

  # The check phase runs the library's unit tests: `--lib` (the binary has
  # none; tests/ is the integration suite, which needs the built binary and,
  # for its test world, root — the VM tests in nix/tests/ are its Nix side).
  # The build sandbox has no root, no network but loopback, neither
  # ldns-dane nor danetool, and only the source tree, so the unit tests that
  # need more are skipped (nix/README.md, "The package's tests").
  cargoTestFlags = [ "--lib" ];
  # OpenSSL's DANE corpus is carried in tests/data/danetest, inside the tree.
  checkFlags = map (test: "--skip=${test}") [
    # the test world of tests/world/: root, Knot, Unbound, Postfix, nginx
    "mta_sts::world_tests"
    # compares postern's output with ldns-dane's and danetool's
    "dane::tests::tools"
  ];

  meta = {
    description = "Mail transfer agent for NixOS whose reason to exist is transport security";
    longDescription = ''
      postern accepts mail over SMTP, keeps it in a durable queue and
      delivers it under an explicit per-destination TLS policy: DANE
      (RFC 7672), MTA-STS (RFC 8461), STARTTLS with fallbacks and TLS
      reporting (RFC 8460). It keeps the operator's own TLSA records in step
      with rotating certificates.
    '';
    license = lib.licenses.asl20;
    mainProgram = "postern";
    platforms = lib.platforms.linux;
  };
}
