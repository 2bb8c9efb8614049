{
  description = "postern: a mail transfer agent for NixOS, built for transport security";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      systemOf = pkgs: pkgs.stdenv.hostPlatform.system;
    in
    {
      overlays.default = final: _prev: {
        postern = final.callPackage ./nix/package.nix { };
      };

      packages = forAllSystems (pkgs: {
        postern = pkgs.callPackage ./nix/package.nix { };
        default = self.packages.${systemOf pkgs}.postern;
      });

      nixosModules = {
        postern =
          { lib, pkgs, ... }:
          {
            imports = [ ./nix/module.nix ];
            services.postern.package = lib.mkDefault self.packages.${systemOf pkgs}.postern;
          };
        default = self.nixosModules.postern;
      };

      checks = forAllSystems (
        pkgs:
        {
          package = self.packages.${systemOf pkgs}.postern;

          # Every .nix file as `nix fmt` would write it.
          formatting =
            pkgs.runCommand "postern-nix-formatting"
              {
                nativeBuildInputs = [ pkgs.nixfmt ];
                src = lib.fileset.toSource {
                  root = ./.;
                  fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ./.;
                };
              }
              ''
                cd "$src"
                find . -name '*.nix' -print0 | xargs -0 nixfmt --check
                touch "$out"
              '';

          # The evaluation test of the module and the package (nix/tests/eval),
          # with this nixpkgs' lib. The whole source: package.nix reads
          # Cargo.toml and src/.
          module-eval =
            pkgs.runCommand "postern-module-eval"
              {
                nativeBuildInputs = [ pkgs.nix ];
                NIXPKGS_LIB = "${nixpkgs}";
              }
              ''
                bash ${./.}/nix/tests/eval/run.sh
                touch "$out"
              '';

          # The static checks of the VM tests (nix/tests/lint), as nix/check.sh
          # runs them where VM tests cannot run.
          lint-vm-tests =
            pkgs.runCommand "postern-lint-vm-tests"
              {
                nativeBuildInputs = [
                  pkgs.nix
                  (pkgs.python3.withPackages (ps: [ ps.mypy ]))
                ];
              }
              ''
                export NIX_STATE_DIR="$TMPDIR/nix-state" NIX_LOG_DIR="$TMPDIR/nix-log"
                nix-instantiate --eval --strict --json --readonly-mode \
                  ${./.}/nix/tests/lint/world.nix > world.json
                python3 ${./.}/nix/tests/lint/check.py world.json
                touch "$out"
              '';
        }
        // import ./nix/tests {
          inherit pkgs;
          postern = self.nixosModules.default;
        }
      );

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          # cargo, rustc, clang for bindgen (LIBCLANG_PATH), the C++ toolchain
          inputsFrom = [ self.packages.${systemOf pkgs}.postern ];
          packages = with pkgs; [
            clippy
            rustfmt
            rust-analyzer
            nixfmt
            # the hermetic test world (tests/world/)
            knot-dns
            unbound
            postfix
            nginx
            swaks
            dig
            openssl
          ];
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree);
    };
}
