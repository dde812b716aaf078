impl Account {
    fn opened(&mut self, e: &AccountOpened) {
        self.owner = e.owner.clone();
    }
    fn withdrawn(&mut self, e: &MoneyWithdrawn) {
        self.balance -= e.amount;
    }
    fn can_withdraw(&self, e: &MoneyWithdrawn) -> Result<(), String> {
        if e.amount > self.balance { Err("insufficient funds".into()) } else { Ok(()) }
    }
}
const _: () = {
    const __APPLIED: [::lexigram::__private::Applied<Account>; 2usize] = [
        ::lexigram::__private::applied::<Account, AccountOpened>(),
        ::lexigram::__private::applied::<Account, MoneyWithdrawn>(),
    ];
    const __EVENTS: [&str; 2usize] = ::lexigram::__private::event_names(&__APPLIED);
    impl ::lexigram::Aggregate for Account {
        const TYPE: &'static str = "Account";
        const SNAPSHOT_VERSION: u32 = 1u32;
        fn apply_stored(
            &mut self,
            event: &::lexigram::EventEnvelope,
        ) -> ::core::result::Result<(), ::lexigram::error::EventLoadError> {
            ::lexigram::__private::apply_stored(self, event, &__APPLIED)
        }
    }
    impl ::lexigram::Apply<AccountOpened> for Account {
        fn apply(&mut self, event: &AccountOpened) {
            Account::opened(self, event)
        }
    }
    impl ::lexigram::Apply<MoneyWithdrawn> for Account {
        fn check(
            &self,
            event: &MoneyWithdrawn,
        ) -> ::core::result::Result<(), ::std::string::String> {
            Account::can_withdraw(self, event)
        }
        fn apply(&mut self, event: &MoneyWithdrawn) {
            Account::withdrawn(self, event)
        }
    }
    ::lexigram::__private::inventory::submit! {
        ::lexigram::__private::AggregateRegistration::of:: < Account > (& __EVENTS,
        ::core::file!(), ::core::line!(),)
    }
};
