impl Account {
    fn opened(&mut self, e: &AccountOpened) {
        self.owner = e.owner.clone();
    }
    fn withdrawn(&mut self, e: &MoneyWithdrawn) {
        self.balance -= e.amount;
    }
    fn can_withdraw(&self, e: &MoneyWithdrawn) -> Result<(), String> {
        Ok(())
    }
}
const _: () = {
    impl ::lexigram::Aggregate for Account {
        const TYPE: &'static str = "Account";
        const SNAPSHOT_VERSION: u32 = 1u32;
        fn apply_stored(
            &mut self,
            event: &::lexigram::EventEnvelope,
        ) -> ::core::result::Result<(), ::lexigram::error::EventLoadError> {
            ::lexigram::aggregate::Route::new(self, event)
                .on::<AccountOpened>()
                .on::<MoneyWithdrawn>()
                .finish()
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
        ::lexigram::__private::AggregateRegistration::of:: < Account > (& [<
        AccountOpened as ::lexigram::Event > ::NAME, < MoneyWithdrawn as
        ::lexigram::Event > ::NAME], ::core::file!(), ::core::line!(),)
    }
};
