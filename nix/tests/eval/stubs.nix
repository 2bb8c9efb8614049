# Minimal stand-ins for the NixOS options nix/module.nix sets, for the few
# parts of `pkgs` it uses (native, and cross to a platform the build
# machine cannot run), and for what nix/package.nix is called with, so that
# both can be evaluated with nothing but nixpkgs' `lib` — no nixpkgs
# checkout, no builds, no store.
#
# The option types copy the merge behaviour that matters for the tests:
# unit settings concatenate lists and insist that scalars agree (as NixOS's
# `unitOption` does), lists of dependencies concatenate, everything else is
# freeform.
{ lib }:

let
  inherit (lib) mkOption types;

  # NixOS' systemd `unitOption`: lists concatenate, scalars must agree.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    check = _: true;
    merge =
      loc: defs:
      if lib.any (d: builtins.isList d.value) defs then
        lib.concatMap (d: lib.toList d.value) defs
      else
        lib.mergeEqualOption loc defs;
  };

  listOpt = mkOption {
    type = types.listOf types.str;
    default = [ ];
  };
  settingsOpt = mkOption {
    type = types.attrsOf unitOption;
    default = { };
  };

  unit = types.submodule {
    freeformType = types.attrsOf types.anything;
    options = {
      enable = mkOption {
        type = types.bool;
        default = true;
      };
      description = mkOption {
        type = types.str;
        default = "";
      };
      wantedBy = listOpt;
      requiredBy = listOpt;
      wants = listOpt;
      requires = listOpt;
      after = listOpt;
      before = listOpt;
      partOf = listOpt;
      listenStreams = listOpt;
      restartTriggers = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
      reloadTriggers = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
      restartIfChanged = mkOption {
        type = types.bool;
        default = true;
      };
      unitConfig = settingsOpt;
      serviceConfig = settingsOpt;
      socketConfig = settingsOpt;
      timerConfig = settingsOpt;
      pathConfig = settingsOpt;
    };
  };

  units = mkOption {
    type = types.attrsOf unit;
    default = { };
  };

  freeformAttrs = mkOption {
    type = types.attrsOf types.anything;
    default = { };
  };

  # A derivation-shaped value: what the module interpolates and what
  # `types.package` accepts. Nothing is ever built.
  fakeDerivation =
    name: attrs:
    attrs
    // {
      type = "derivation";
      inherit name;
      outPath = "/nix/store/${
        builtins.substring 0 32 (builtins.hashString "sha256" (name + builtins.toJSON attrs))
      }-${name}";
    };

  # The value type of nixpkgs' `pkgs.formats.json`.
  jsonValue =
    let
      valueType =
        types.nullOr (
          types.oneOf [
            types.bool
            types.int
            types.float
            types.str
            types.path
            (types.attrsOf valueType)
            (types.listOf valueType)
          ]
        )
        // {
          description = "JSON value";
        };
    in
    valueType;
  # A native build: the build platform runs what it builds.
  native = {
    system = "x86_64-linux";
    canExecute = platform: platform.system == "x86_64-linux";
  };

  pkgs = {
    formats.json =
      { }:
      {
        type = jsonValue;
        # `json` is the text the real generator writes (it pretty-prints the
        # same document with jq).
        generate =
          name: value:
          fakeDerivation name {
            json = builtins.toJSON value;
          };
      };
    runCommand = name: env: script: fakeDerivation name { inherit env script; };
    writeText = name: text: fakeDerivation name { inherit text; };
    postern = fakeDerivation "postern-0.1.0" {
      pname = "postern";
      version = "0.1.0";
      meta.mainProgram = "postern";
    };
    stdenv = {
      buildPlatform = native;
      hostPlatform = native;
    };
  };
in
{
  inherit pkgs fakeDerivation;

  # The same, cross-compiling for a platform the build machine cannot run.
  crossPkgs = pkgs // {
    stdenv = {
      buildPlatform = native;
      hostPlatform = {
        system = "riscv64-linux";
        canExecute = platform: platform.system == "riscv64-linux";
      };
    };
  };

  # What nix/package.nix is called with: buildRustPackage returns its
  # arguments, so that the test can read them.
  packageArgs = {
    inherit lib;
    inherit (pkgs) stdenv;
    installShellFiles = fakeDerivation "install-shell-files" { };
    rustPlatform = {
      buildRustPackage = args: args;
      bindgenHook = fakeDerivation "bindgen-hook" { };
    };
  };

  module = {
    options = {
      assertions = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
      warnings = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };

      # NixOS' nixos/modules/misc/meta.nix
      meta.maintainers = mkOption {
        type = types.listOf types.attrs;
        default = [ ];
      };
      meta.doc = mkOption {
        type = types.nullOr types.path;
        default = null;
      };

      systemd.services = units;
      systemd.sockets = units;
      systemd.timers = units;
      systemd.paths = units;

      users.users = freeformAttrs;
      users.groups = freeformAttrs;

      networking.firewall.allowedTCPPorts = mkOption {
        type = types.listOf types.port;
        default = [ ];
      };

      environment.systemPackages = mkOption {
        type = types.listOf types.package;
        default = [ ];
      };
      environment.etc = mkOption {
        type = types.attrsOf (
          types.submodule {
            freeformType = types.attrsOf types.anything;
            options.source = mkOption { type = types.unspecified; };
          }
        );
        default = { };
      };

      security.acme.certs = mkOption {
        default = { };
        type = types.attrsOf (
          types.submodule (
            { name, ... }:
            {
              freeformType = types.attrsOf types.anything;
              options = {
                directory = mkOption {
                  type = types.str;
                  default = "/var/lib/acme/${name}";
                };
                group = mkOption {
                  type = types.str;
                  default = "acme";
                };
                reloadServices = mkOption {
                  type = types.listOf types.str;
                  default = [ ];
                };
              };
            }
          )
        );
      };
    };
  };
}
