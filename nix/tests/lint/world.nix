# What the static checks of nix/tests/lint/check.py read from the VM tests,
# evaluated with `nix-instantiate --eval --strict --json` and nothing else:
# no nixpkgs, no builds. `pkgs` is a stand-in whose derivations are plain
# attribute sets (their paths are fake), so the test scripts evaluate to
# the text the NixOS test driver would run, store paths aside.
#
#   { tests.<check> = { name; nodes = [ … ]; script;
#                       postern.<node> = { nameservers = [ … ]; timer; }; };
#     zonesScript = "…"; }       # the build script that writes the zone files
#
# `postern` lists the nodes that enable services.postern, with the
# `settings.resolver.nameservers` their modules (and the modules they
# import) define and, when the TLSA timer is on, the `onBoot` they give it
# (null: the module's default): plain definitions read as written, no
# NixOS evaluation.
let
  # Nothing the scripts are made of needs nixpkgs' lib.
  lib = throw "nix/tests/lint/world.nix: nixpkgs' lib is not available here";
  lib'.filterAttrs =
    keep: set:
    builtins.listToAttrs (
      map (name: {
        inherit name;
        value = set.${name};
      }) (builtins.filter (name: keep name set.${name}) (builtins.attrNames set))
    );

  fakeDerivation = name: attrs: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" name)}-${name}";
    passthru = attrs;
  };

  pkgs = {
    inherit lib;
    runCommand = name: env: script: fakeDerivation name { inherit env script; };
    writeText = name: text: fakeDerivation name { inherit text; };
    # what default.nix hands each test to: keep the test module as it is
    testers.runNixOSTest = test: test;
  };

  checks = import ../default.nix {
    inherit pkgs;
    postern = { };
  };
  world = import ../common { inherit pkgs lib; };

  moduleArgs = {
    inherit pkgs lib;
    config = throw "nix/tests/lint/world.nix: a node's config is not available here";
    nodes = { };
    name = "node";
  };
  # A node's module and every module it imports, as attribute sets.
  modulesOf =
    module:
    let
      value = if builtins.isFunction module then module moduleArgs else module;
    in
    [ value ] ++ builtins.concatMap modulesOf (value.imports or [ ]);
  posternOf =
    node:
    let
      definitions = map (m: m.services.postern or { }) (modulesOf node);
    in
    {
      enable = builtins.any (d: d.enable or false) definitions;
      nameservers = builtins.concatMap (d: d.settings.resolver.nameservers or [ ]) definitions;
      timer =
        if builtins.any (d: d.tlsa.autoUpdate.enable or false) definitions then
          {
            onBoot = builtins.foldl' (found: d: d.tlsa.autoUpdate.onBoot or found) null definitions;
          }
        else
          null;
    };

  testOf =
    check:
    let
      test = builtins.head check.imports;
      posterns = builtins.mapAttrs (_: posternOf) test.nodes;
    in
    {
      inherit (test) name;
      nodes = builtins.attrNames test.nodes;
      postern = builtins.mapAttrs (_: p: { inherit (p) nameservers timer; }) (
        lib'.filterAttrs (_: p: p.enable) posterns
      );
      script =
        if builtins.isString test.testScript then
          test.testScript
        else
          throw "${test.name}: testScript is a function; the lint reads strings only";
    };
in
{
  tests = builtins.mapAttrs (_: testOf) checks;
  zonesScript = world.zones.passthru.script;
}
