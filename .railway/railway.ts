// Railway's Infrastructure as Code for this service: the web service built from the Dockerfile,
// the release before each deploy, /ready as its health check, and a PostgreSQL database wired to
// DATABASE_URL. Railway applies this file only through its CLI (5.42.1 or newer), from this
// folder once linked to your project: `railway config plan`, then `railway config apply`.
// A deploy from GitHub does not read it: README.md gives the same settings to click instead.
// Put your repository's owner/name in REPOSITORY before you apply it.
import { defineRailway, github, postgres, service } from "railway/iac";

const REPOSITORY = "your-github-user/your-repository";

export default defineRailway((_ctx, project) => {
  const database = postgres("Postgres");
  const web = service("web", {
    source: github(REPOSITORY),
    build: { builder: "DOCKERFILE", dockerfilePath: "Dockerfile" },
    deploy: {
      startCommand: "gunicorn --config gunicorn.conf.py app:app",
      preDeployCommand: ["flask --app app upgrade-database"],
      healthcheckPath: "/ready",
      healthcheckTimeout: 120,
      restartPolicyType: "ON_FAILURE",
      restartPolicyMaxRetries: 10,
      // The old version gets SIGTERM once the new one is live, and SIGKILL this long after.
      drainingSeconds: 30,
    },
    env: { DATABASE_URL: database.env.DATABASE_URL },
  });
  return project("prediction-service", { resources: [database, web] });
});
