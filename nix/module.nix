# services.postern — SPEC §4; documented in ./README.md (meta.doc).
#
# The configuration is RFC 42 freeform JSON (`settings`), rendered to the
# store, checked at build time with `postern check-config --offline` and
# linked to /etc/postern/config.json, which is what the daemon and the CLI
# read. Secrets never enter the store: `credentials` passes files with
# systemd LoadCredential and `settings` refers to them as
# `%{file:/run/credentials/postern.service/NAME}%`.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib)
    concatLists
    concatStringsSep
    filterAttrs
    literalExpression
    mapAttrs'
    mapAttrsToList
    mkDefault
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    mkPackageOption
    nameValuePair
    optional
    optionalAttrs
    optionals
    types
    ;

  cfg = config.services.postern;
  format = pkgs.formats.json { };

  # The stable path the daemon, the timer and the CLI read. A reload
  # (SIGHUP) re-reads it, so a new generation's configuration takes effect
  # without a restart; see reloadTriggers below.
  configPath = "/etc/postern/config.json";
  credentialsDir = "/run/credentials/postern.service";
  exe = lib.getExe cfg.package;

  # ------------------------------------------------------------ listeners

  listeners = cfg.settings.server.listeners;
  bindsOf = listener: lib.toList listener.bind;
  # "[::]:25", "0.0.0.0:25", "127.0.0.1:2525" (SPEC §2.1: socket addresses)
  portOf = address: lib.toInt (lib.last (lib.splitString ":" address));
  isLoopback = address: lib.hasPrefix "127." address || lib.hasPrefix "[::1]:" address;
  allBinds = concatLists (mapAttrsToList (_: bindsOf) listeners);
  publicPorts = lib.unique (map portOf (lib.filter (a: !isLoopback a) allBinds));
  privilegedPorts = lib.any (a: portOf a < 1024) allBinds;

  # Without socket activation postern binds itself and needs this one
  # capability for ports below 1024; with it, systemd binds and postern
  # holds no capability at all.
  needsBindCapability = !cfg.socketActivation && privilegedPorts;

  socketUnitName = id: "postern-${id}";
  socketUnits = map (id: "${socketUnitName id}.socket") (lib.attrNames listeners);

  # Socket options of SPEC §2.1 that systemd applies when it binds.
  socketOptions =
    listener:
    let
      s = (cfg.settings.server.socket or { }) // (listener.socket or { });
    in
    filterAttrs (_: v: v != null) {
      Backlog = s.backlog or null;
      ReusePort = s.reusePort or null;
      NoDelay = s.nodelay or null;
      SendBuffer = s.sendBufferSize or null;
      ReceiveBuffer = s.recvBufferSize or null;
    };

  # ------------------------------------------------------------ secrets

  storeDirs = lib.unique [
    builtins.storeDir
    "/nix/store"
  ];
  isStorePath = p: lib.any (dir: p == dir || lib.hasPrefix "${dir}/" p) storeDirs;

  settingsJSON = builtins.toJSON cfg.settings;

  # Credential names the settings refer to.
  referencedCredentials = lib.unique (
    concatLists (
      lib.filter builtins.isList (
        builtins.split "%\\{file:${lib.escapeRegex credentialsDir}/([^}]*)}%" settingsJSON
      )
    )
  );

  # Credentials may also reach the daemon without `credentials`: set by the
  # user on the unit with `LoadCredentialEncrypted=NAME[:PATH]` or
  # `ImportCredential=GLOB` (systemd.exec(5)).
  daemonServiceConfig = config.systemd.services.postern.serviceConfig;
  unitCredentials = key: lib.toList (daemonServiceConfig.${key} or [ ]);
  encryptedCredentials = unitCredentials "LoadCredentialEncrypted";
  importedCredentials = unitCredentials "ImportCredential";
  encryptedNames = map (entry: lib.head (lib.splitString ":" entry)) encryptedCredentials;
  # `GLOB` or `GLOB:NAME` (a renaming import): the names it gives.
  importedGlobs = map (entry: lib.last (lib.splitString ":" entry)) importedCredentials;
  globChar = c: if c == "*" then ".*" else if c == "?" then "." else lib.escapeRegex c;
  globRegex = glob: lib.concatMapStrings globChar (lib.stringToCharacters glob);
  isImported = name: lib.any (glob: builtins.match (globRegex glob) name != null) importedGlobs;
  isDeclared = name: cfg.credentials ? ${name} || lib.elem name encryptedNames || isImported name;
  undeclaredCredentials = lib.filter (n: !(isDeclared n)) referencedCredentials;
  anyCredentials =
    cfg.credentials != { } || encryptedCredentials != [ ] || importedCredentials != [ ];

  # Keys whose values are secrets (SPEC §2.1, §2.2, §2.3, §2.6, §2.7): they
  # must be `%{file:…}%` / `%{env:…}%` references, never the secret itself.
  secretKeys = [
    "privateKey"
    "secret"
    "apiToken"
  ];
  isReference = s: builtins.match "[[:space:]]*%\\{(file|env):[^}]+}%[[:space:]]*" s != null;
  inlineSecrets =
    path: value:
    if builtins.isAttrs value then
      concatLists (
        mapAttrsToList (
          k: v:
          optional (builtins.elem k secretKeys && builtins.isString v && !isReference v) (
            concatStringsSep "." (path ++ [ k ])
          )
          ++ inlineSecrets (path ++ [ k ]) v
        ) value
      )
    else if builtins.isList value then
      concatLists (lib.imap0 (i: inlineSecrets (path ++ [ (toString i) ])) value)
    else
      [ ];
  inlineSecretPaths = inlineSecrets [ ] cfg.settings;

  loadCredential = mapAttrsToList (name: path: "${name}:${path}") cfg.credentials;

  # ------------------------------------------------------------ config file

  rawConfigFile = format.generate "postern-settings.json" cfg.settings;

  # The check runs the host's postern on the build machine: not when
  # cross-compiling for a platform the build machine cannot execute.
  canRunPostern = pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform;
  runCheckConfig = cfg.checkConfig && canRunPostern;

  checkedConfigFile =
    pkgs.runCommand "postern-config.json" { preferLocalBuild = true; } ''
      ${lib.optionalString runCheckConfig "${exe} check-config ${rawConfigFile} --offline"}
      cp ${rawConfigFile} $out
    '';

  # What a reload cannot change: sockets, storage, control socket. A change
  # here restarts the daemon; any other change only reloads it.
  restartKey = builtins.hashString "sha256" (
    builtins.toJSON {
      inherit (cfg) socketActivation;
      listeners = lib.mapAttrs (_: l: {
        bind = bindsOf l;
        inherit (l) protocol;
      }) listeners;
      storage = cfg.settings.storage.path;
      control = cfg.settings.control.socket;
    }
  );

  # ------------------------------------------------------------ sandbox

  storagePath = cfg.settings.storage.path;
  storageInVarLib = lib.hasPrefix "/var/lib/" storagePath;
  stateDirectory = if storageInVarLib then lib.removePrefix "/var/lib/" storagePath else "postern";

  acmeEnabled = cfg.acmeCertificate != null;
  acmeCert = config.security.acme.certs.${cfg.acmeCertificate};
  acmeDirectory = acmeCert.directory;
  acmeUnit = "acme-${cfg.acmeCertificate}.service";

  supplementaryGroups = cfg.supplementaryGroups ++ optional acmeEnabled acmeCert.group;

  # `tlsa.rollover.export` writes the switched-to certificate for another
  # server: its directories must be writable inside ProtectSystem=strict.
  rolloverExport = ((cfg.settings.tlsa or { }).rollover or { }).export or null;
  exportDirectories = lib.optionals (rolloverExport != null) (
    lib.unique [
      (dirOf rolloverExport.cert)
      (dirOf rolloverExport.privateKey)
    ]
  );

  # Shared by the daemon and the TLSA sync: the same (dynamic) user, state,
  # secrets and confinement.
  sandbox = {
    DynamicUser = true;
    User = "postern";
    Group = "postern";
    SupplementaryGroups = supplementaryGroups;
    StateDirectory = stateDirectory;
    StateDirectoryMode = "0700";
    ReadWritePaths = optional (!storageInVarLib) storagePath ++ exportDirectories;
    LoadCredential = loadCredential;
    UMask = "0077";

    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    DevicePolicy = "closed";
    # A user namespace maps supplementary groups to nobody and voids the
    # bind capability, so it is used only when neither is needed.
    PrivateUsers = supplementaryGroups == [ ] && !needsBindCapability;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectProc = "invisible";
    ProcSubset = "pid";
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    RemoveIPC = true;
    RestrictAddressFamilies = [
      "AF_INET"
      "AF_INET6"
      "AF_UNIX"
    ];
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service"
      "~@privileged @resources"
    ];
    SystemCallErrorNumber = "EPERM";
  };

  # ------------------------------------------------------------ option types

  listenerModule = {
    freeformType = format.type;
    options = {
      bind = mkOption {
        type = with types; either str (listOf str);
        example = [
          "0.0.0.0:25"
          "[::]:25"
        ];
        description = ''
          Address or addresses (`IP:PORT`, IPv6 in brackets) this listener
          accepts connections on. `[::]` is IPv6 only, so IPv4 needs its own
          `0.0.0.0:PORT`: postern binds IPv6 sockets with `IPV6_V6ONLY`,
          and with [](#opt-services.postern.socketActivation) these become
          the `ListenStream=` lines of the listener's socket unit, which
          has `BindIPv6Only=ipv6-only`.
        '';
      };
      protocol = mkOption {
        type = types.enum [
          "smtp"
          "http"
        ];
        default = "smtp";
        description = ''
          `smtp`, or `http` for the status page `/`, `/healthz` and `/metrics`
          (optionally behind `auth.bearerToken`), TLS reports POSTed to
          `reports.receive.path` and the MTA-STS policies of
          `mtaSts.publish` at `/.well-known/mta-sts.txt` (which the token
          does not guard); HTTPS with `tls.implicit = true`.
        '';
      };
    };
  };
in
{
  options.services.postern = {
    enable = mkEnableOption "postern, a mail transfer agent focused on transport security";

    package = mkPackageOption pkgs "postern" { };

    settings = mkOption {
      default = { };
      description = ''
        postern's configuration (SPEC §2) as a Nix value, rendered to JSON.
        Keys are camelCase, as in the JSON document; unknown keys are
        rejected by `postern check-config` when the system is built.

        Secrets belong in [](#opt-services.postern.credentials) and are
        referred to as `"%{file:/run/credentials/postern.service/NAME}%"`.
      '';
      example = literalExpression ''
        {
          server.hostname = "mx1.example.org";
          server.listeners = {
            smtp.bind = [ "0.0.0.0:25" "[::]:25" ];
            submissions = { bind = [ "0.0.0.0:465" "[::]:465" ]; tls.implicit = true; };
          };
          session.localDomains = [ "example.org" ];
          session.auth.users.app.secret = "%{file:/run/credentials/postern.service/app}%";
        }
      '';
      type = types.submodule {
        freeformType = format.type;
        options = {
          server = mkOption {
            default = { };
            description = "Listeners and server-wide TLS and socket settings (SPEC §2.1).";
            type = types.submodule {
              freeformType = format.type;
              options = {
                hostname = mkOption {
                  type = types.nullOr types.str;
                  default = null;
                  example = "mx1.example.org";
                  description = "The name postern greets with; the system's host name when null.";
                };
                listeners = mkOption {
                  type = types.attrsOf (types.submodule listenerModule);
                  default = {
                    smtp = {
                      bind = [
                        "0.0.0.0:25"
                        "[::]:25"
                      ];
                      protocol = "smtp";
                    };
                  };
                  defaultText = literalExpression ''
                    { smtp = { bind = [ "0.0.0.0:25" "[::]:25" ]; protocol = "smtp"; }; }
                  '';
                  description = ''
                    Listeners by id. With socket activation each becomes the
                    socket unit `postern-<id>.socket`, whose file descriptors
                    carry the id as their name. The default listens for SMTP
                    on port 25 of every IPv4 and every IPv6 address.
                  '';
                };
              };
            };
          };
          storage = mkOption {
            default = { };
            description = "Where the queue (RocksDB) and postern's own files live.";
            type = types.submodule {
              freeformType = format.type;
              options.path = mkOption {
                type = types.str;
                default = "/var/lib/postern";
                description = ''
                  Data directory. Below /var/lib it is the unit's
                  `StateDirectory=`; elsewhere it must exist and belong to
                  the service's user, and is made writable for it.
                '';
              };
            };
          };
          control = mkOption {
            default = { };
            description = "The control socket of the `queue` and `reports` commands.";
            type = types.submodule {
              freeformType = format.type;
              options.socket = mkOption {
                type = types.str;
                default = "/run/postern/control.sock";
                description = ''
                  Path of the control socket, fixed so that the CLI, which
                  reads the same configuration outside the unit, finds it.
                '';
              };
            };
          };
        };
      };
    };

    configFile = mkOption {
      type = types.package;
      readOnly = true;
      default = checkedConfigFile;
      defaultText = literalExpression "the rendered and checked settings";
      description = "The rendered, checked configuration; /etc/postern/config.json links to it.";
    };

    checkConfig = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Run `postern check-config --offline` on the rendered configuration
        when the system is built. `--offline` reads neither secret files nor
        the network. Skipped when cross-compiling for a platform the build
        machine cannot execute.
      '';
    };

    credentials = mkOption {
      type = types.attrsOf (types.coercedTo types.path toString types.str);
      default = { };
      example = {
        tsig = "/run/secrets/postern-tsig";
        app = "/run/secrets/postern-app-password";
      };
      description = ''
        Secret files by name, passed to the service with systemd
        `LoadCredential=` (so the files may be readable by root only) and
        referred to in [](#opt-services.postern.settings) as
        `"%{file:/run/credentials/postern.service/NAME}%"`.
        Give paths as strings: a path outside the Nix store, never a Nix
        path literal or a store path, which would put the secret in the
        world-readable store. Credentials set on the unit itself
        (`systemd.services.postern.serviceConfig.LoadCredentialEncrypted`
        or `ImportCredential`) may be referred to as well; the TLSA sync
        unit gets them too.
      '';
    };

    socketActivation = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Let systemd bind the listeners: one socket unit
        `postern-<id>.socket` per listener, `FileDescriptorName=<id>`.
        postern then runs without any capability, connections wait in the
        kernel's queue across restarts, and a connection starts the daemon
        if it is not running.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the TCP ports of all listeners not bound to loopback.";
    };

    supplementaryGroups = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "certs" ];
      description = ''
        Extra groups of the service, for files postern reads in place
        (certificates managed by another tool, which a renewal replaces).
        [](#opt-services.postern.acmeCertificate) adds the ACME group itself.
      '';
    };

    acmeCertificate = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "mx1.example.org";
      description = ''
        Name of a `security.acme.certs` entry to use as the `default`
        certificate. postern reads `fullchain.pem` and `key.pem` in place
        through the certificate's group (not LoadCredential, whose copies
        never change), a renewal reloads the daemon, and with
        [](#opt-services.postern.tlsa.autoUpdate.enable) starts
        `postern tlsa sync` so that the gated rollover (SPEC §2.7) begins at
        once.
      '';
    };

    tlsa.autoUpdate = {
      enable = mkEnableOption ''
        a timer running `postern tlsa sync`, which publishes the TLSA records
        of `settings.tlsa.records` and carries rollovers forward'';
      interval = mkOption {
        type = types.str;
        default = "5min";
        example = "1h";
        description = "How long after each run the next one starts (systemd time span).";
      };
      onBoot = mkOption {
        type = types.str;
        default = "1min";
        description = "How long after boot the first run starts.";
      };
    };
  };

  meta = {
    # Out of tree: no nixpkgs maintainer handle belongs to this project.
    maintainers = [ ];
    doc = ./README.md;
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions =
        mapAttrsToList (name: path: {
          assertion = !(isStorePath path);
          message = ''
            services.postern.credentials.${name} is a Nix store path (${path}).
            Everything in the store is world-readable: keep the secret outside
            it (e.g. sops-nix, agenix or a file under /run/keys) and give its
            path as a string.'';
        }) cfg.credentials
        ++ mapAttrsToList (name: path: {
          assertion = lib.hasPrefix "/" path;
          message = "services.postern.credentials.${name} must be an absolute path: \"${path}\".";
        }) cfg.credentials
        ++ map (name: {
          assertion = builtins.match "[A-Za-z0-9_.-]+" name != null;
          message = ''
            services.postern.credentials: "${name}" is not a valid credential name
            (letters, digits, _ . -).'';
        }) (lib.attrNames cfg.credentials)
        ++ [
          {
            assertion = undeclaredCredentials == [ ];
            message = ''
              services.postern.settings refers to credentials that neither
              services.postern.credentials nor the unit's LoadCredentialEncrypted=
              or ImportCredential= provides: ${concatStringsSep ", " undeclaredCredentials}.'';
          }
          {
            assertion = inlineSecretPaths == [ ];
            message = ''
              services.postern.settings holds secrets in clear text, which would
              put them in the world-readable Nix store: ${concatStringsSep ", " inlineSecretPaths}.
              Pass the secret with services.postern.credentials and write
              "%{file:${credentialsDir}/NAME}%" instead.'';
          }
          {
            assertion = listeners != { };
            message = "services.postern.settings.server.listeners must define a listener.";
          }
        ];

      warnings =
        optional (cfg.tlsa.autoUpdate.enable && (cfg.settings.tlsa.records or { }) == { })
          ''
            services.postern.tlsa.autoUpdate is enabled but settings.tlsa.records is empty:
            the timer will have nothing to publish.'';

      environment.etc."postern/config.json".source = cfg.configFile;
      environment.systemPackages = [ cfg.package ];

      systemd.services.postern = {
        description = "postern mail transfer agent";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ] ++ optional acmeEnabled acmeUnit;
        after = [
          "network-online.target"
          "nss-lookup.target"
        ]
        ++ optionals cfg.socketActivation socketUnits
        ++ optional acmeEnabled acmeUnit;
        requires = optionals cfg.socketActivation socketUnits;

        # Listeners, storage or control socket changed: restart. Anything
        # else: `systemctl reload`, i.e. SIGHUP, which re-reads
        # /etc/postern/config.json and the certificates.
        restartTriggers = [ restartKey ];
        reloadTriggers = [ cfg.configFile ];

        serviceConfig = sandbox // {
          Type = "notify-reload";
          ExecStart = "${exe} serve --config ${configPath}";
          WatchdogSec = mkDefault "1min";
          Restart = "on-failure";
          RestartSec = "5s";
          LimitNOFILE = mkDefault 65536;
          RuntimeDirectory = "postern";
          RuntimeDirectoryMode = "0700";
          WorkingDirectory = storagePath;
          CapabilityBoundingSet = [
            (if needsBindCapability then "CAP_NET_BIND_SERVICE" else "")
          ];
          AmbientCapabilities = optional needsBindCapability "CAP_NET_BIND_SERVICE";
        }
        // optionalAttrs cfg.socketActivation {
          Sockets = socketUnits;
        };
      };

      networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall publicPorts;
    }

    (mkIf cfg.socketActivation {
      systemd.sockets = mapAttrs' (
        id: listener:
        nameValuePair (socketUnitName id) {
          description = "postern listener ${id}";
          wantedBy = [ "sockets.target" ];
          listenStreams = bindsOf listener;
          socketConfig = {
            FileDescriptorName = id;
            Service = "postern.service";
            # `[::]` takes IPv6 only, as when postern binds it itself
            # (IPV6_V6ONLY): `[::]:25` and `0.0.0.0:25` can both be listed,
            # and `[::]:25` alone does not quietly take IPv4 as well.
            BindIPv6Only = "ipv6-only";
          }
          // socketOptions listener;
        }
      ) listeners;
    })

    (mkIf cfg.tlsa.autoUpdate.enable {
      systemd.services.postern-tlsa-sync = {
        description = "Publish postern's TLSA records (postern tlsa sync)";
        # `postern tlsa sync` has the running daemon do the step over the
        # control socket (the daemon holds the store and serves the
        # certificate). With socket activation the daemon may not be
        # running: start it first, so that the sync never opens the store
        # itself while a connection starts the daemon.
        requires = [ "postern.service" ];
        wants = [ "network-online.target" ];
        after = [
          "network-online.target"
          "nss-lookup.target"
          "postern.service"
        ]
        ++ optional acmeEnabled acmeUnit;
        # A oneshot run by its timer; a configuration switch does not run it.
        restartIfChanged = false;
        # The daemon's user, state directory, credentials and confinement
        # (sandbox): even when it does open the store, nothing it leaves
        # there (RocksDB's LOCK) belongs to another user.
        serviceConfig = sandbox // {
          Type = "oneshot";
          ExecStart = "${exe} tlsa sync --config ${configPath}";
          CapabilityBoundingSet = [ "" ];
          # The settings name secrets by the daemon's credential directory;
          # show this unit's own copies there.
          BindReadOnlyPaths = optional anyCredentials "%d:${credentialsDir}";
        }
        // optionalAttrs (encryptedCredentials != [ ]) {
          LoadCredentialEncrypted = encryptedCredentials;
        }
        // optionalAttrs (importedCredentials != [ ]) {
          ImportCredential = importedCredentials;
        };
      };

      systemd.timers.postern-tlsa-sync = {
        description = "Run postern tlsa sync periodically";
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnBootSec = cfg.tlsa.autoUpdate.onBoot;
          OnUnitActiveSec = cfg.tlsa.autoUpdate.interval;
          Unit = "postern-tlsa-sync.service";
        };
      };
    })

    (mkIf acmeEnabled {
      services.postern.settings.certificates.default = mkDefault {
        cert = "%{file:${acmeDirectory}/fullchain.pem}%";
        privateKey = "%{file:${acmeDirectory}/key.pem}%";
      };

      # A renewal reloads the daemon (SIGHUP re-reads the certificate files).
      security.acme.certs.${cfg.acmeCertificate}.reloadServices = [ "postern.service" ];
    })

    (mkIf (acmeEnabled && cfg.tlsa.autoUpdate.enable) {
      # …and starts `tlsa sync` at once, whatever unit wrote the files.
      systemd.paths.postern-tlsa-sync = {
        description = "Run postern tlsa sync when ${cfg.acmeCertificate} is renewed";
        wantedBy = [ "paths.target" ];
        pathConfig = {
          PathChanged = "${acmeDirectory}/fullchain.pem";
          Unit = "postern-tlsa-sync.service";
        };
      };
    })
  ]);
}
